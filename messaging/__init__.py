"""How the choreographed saga's events travel: the envelope, the transactional outbox and its relay,
the inbox and its worker, the embedded HTTP transport, and RabbitMQ with its per-service accounts.

Nothing here knows a saga: what an event means, and who reacts to it, is choreography/'s.
"""
