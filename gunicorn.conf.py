"""gunicorn settings shared by the four processes (override with GUNICORN_* variables)."""

import os

# One process per app: the orchestrator's recovery loop and lease id belong to one process,
# and threads serve the many calls that mostly wait on the network or the database.
workers = int(os.environ.get("GUNICORN_WORKERS", "1"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
# A saga answered synchronously may take CALL_TIMEOUT x attempts x steps; never cut it off.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "300"))
graceful_timeout = 10
keepalive = 30
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG") == "1" else None
# gunicorn 24+ opens one control socket at a fixed path; four servers on one host would clash.
control_socket_disable = True
