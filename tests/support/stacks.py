"""What the tests' systems run on: the database (TEST_DATABASE_URL), the broker and the
choreography's transports, and a RabbitMQ node of a test's own."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from tenacity import Retrying, stop_after_delay, wait_fixed

from scripts.stack import free_port

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL") or None
BROKER_URL = os.environ.get("TEST_BROKER_URL") or "amqp://guest:guest@127.0.0.1:5672/%2F"
TRANSPORTS = {"embedded": {}, "rabbitmq": {"BROKER_URL": BROKER_URL}}
# The isolation lab's race: the second choreographed sign-up must wait out the first's slow
# failure at C and its undo all the way back, and then run its own three steps, within its
# deadline. The tests' 4 s (short, for the timeout tests) left too little of it on a loaded
# machine (the MariaDB leg saw the second time out once); the shipped deadline is 15 s.
LAB_RACE = {"CHOREOGRAPHY_DEADLINE": "10"}


class PrivateBroker:
    """A RabbitMQ node of a test's own (its own ports, data and log directories, on this
    machine's rabbitmq-server), for what must not disturb the tests sharing the machine's
    broker: stopping and starting it. Its guest account reaches it from this machine."""

    def __init__(self) -> None:
        # Its own directory under /tmp: the server runs as the rabbitmq user, who may not enter
        # pytest's directories (they are their owner's alone).
        self.workdir = Path(tempfile.mkdtemp(prefix="saga-rabbitmq-"))
        self.port = free_port()
        self.node = f"saga-test-{uuid.uuid4().hex[:8]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def ctl(self, *args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", "-n", self.node, *args], check=True, capture_output=True,
                       timeout=120)

    def start(self) -> PrivateBroker:
        (self.workdir / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        shutil.chown(self.workdir, "rabbitmq", "rabbitmq")  # the server runs as rabbitmq
        env = {**os.environ, "RABBITMQ_NODENAME": self.node, "RABBITMQ_DIST_PORT": str(free_port()),
               "RABBITMQ_CONFIG_FILE": str(self.workdir / "rabbitmq"),
               "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
               "RABBITMQ_LOG_BASE": str(self.workdir / "log"), "RABBITMQ_PID_FILE": str(self.workdir / "pid"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "plugins")}
        subprocess.run(["rabbitmq-server", "-detached"], env=env, check=True, capture_output=True, timeout=60)
        for attempt in Retrying(stop=stop_after_delay(60), wait=wait_fixed(0.3), reraise=True):
            with attempt:
                self.ctl("await_startup")
        return self

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.ctl("stop")
        shutil.rmtree(self.workdir, ignore_errors=True)
