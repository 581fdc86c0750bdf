"""gunicorn settings shared by the four processes (override with GUNICORN_* variables)."""

import json
import os
import tempfile

import gunicorn.util

from common.settings import gunicorn_threads

# One process per app: the orchestrator's recovery loop and lease id belong to one process,
# and threads serve the many calls that mostly wait on the network or the database.
workers = int(os.environ.get("GUNICORN_WORKERS", "1"))
worker_class = "gthread"
threads = gunicorn_threads(os.environ)
# A saga answered synchronously may take CALL_TIMEOUT x attempts x steps; never cut it off.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "300"))
graceful_timeout = 10
keepalive = 30
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG") == "1" else None
# gunicorn 24+ opens one control socket at a fixed path; four servers on one host would clash.
control_socket_disable = True

if os.environ.get("LOG_FORMAT") == "json":  # gunicorn's own lines in the apps' JSON shape too
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "common.logs.JsonFormatter"}},
        "filters": {"context": {"()": "common.logs.ContextFilter", "process": "gunicorn"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "filters": ["context"], "stream": "ext://sys.stderr"}},
        "root": {"level": "INFO", "handlers": []},  # the apps add their own handler
        "loggers": {"gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
                    "gunicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False}},
    }

# Several workers: each keeps its Prometheus values in files of one directory, added up at
# each scrape (prometheus-client's multiprocess mode); a dead worker's are folded in.
if workers > 1:
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="saga-metrics-"))


def child_exit(server: object, worker: object) -> None:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def _json_error(sock: object, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn answers a request it cannot parse (a request line or header over its limits)
    itself, before any app sees it, with an HTML page; answer in the JSON error shape every
    other error has instead."""
    code = reason.lower().replace(" ", "_")
    body = json.dumps({"error": {"code": code, "message": mesg}}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "X-Content-Type-Options: nosniff\r\n\r\n").encode("latin-1")
    gunicorn.util.write_nonblock(sock, head + body)


gunicorn.util.write_error = _json_error
