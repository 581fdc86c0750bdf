#!/bin/sh
# Compose's broker: RabbitMQ as its image starts it, then, once it answers, the accounts
# (accounts.sh: one per service, each allowed only its own events; the guest administrator
# deleted). The health check passes only after that, so no service connects before.
set -eu
rm -f /tmp/accounts-ready
docker-entrypoint.sh rabbitmq-server &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server"; exit 0' TERM INT
until rabbitmqctl -q await_startup >/dev/null 2>&1; do
    kill -0 "$server" 2>/dev/null || exit 1  # the server itself did not start
    sleep 1
done
sh /opt/saga/accounts.sh
touch /tmp/accounts-ready
wait "$server"
