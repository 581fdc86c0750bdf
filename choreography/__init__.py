"""The sign-up saga choreographed: no orchestrator; each service reacts to the others' events.

`flow.py` is the whole saga in one table (who reacts to which event, and what it says next);
the rest is the machinery that makes events safe to rely on: a transactional outbox and an
idempotent inbox in every service, a relay over HTTP (embedded) or RabbitMQ, the deadline,
and an observer that follows every event and takes no part in the saga.
"""
