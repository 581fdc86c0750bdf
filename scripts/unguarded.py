"""A participant with its safety switched off, for `make bench` only: the price of safety.

The same app as `service_<name>.wsgi`, but its calls are not checked for a signature, it counts
nothing in its metrics and it makes no spans at all (OpenTelemetry's no-op tracer). The bench
runs the bare chain against these and against the real participants in one run, and prints a
participant call's CPU with and without. Never shipped (the image has no scripts/), never
started by `make run`: `gunicorn scripts.unguarded:app` with UNGUARDED_SERVICE=a, b or c.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NoOpTracerProvider

from participant import routes


class _Uncounted:
    """A metric that counts nothing."""

    def labels(self, *_: Any) -> _Uncounted:
        return self

    def inc(self, *_: Any) -> None:
        return None

    def observe(self, *_: Any) -> None:
        return None


trace.set_tracer_provider(NoOpTracerProvider())  # before the app installs the SDK's: it stays
setattr(routes, "require_signature", lambda _secret: None)  # noqa: B010 (monkey-patched on purpose)
setattr(routes, "PARTICIPANT_REQUESTS", _Uncounted())  # noqa: B010
setattr(routes, "HANDLER_DURATION", _Uncounted())  # noqa: B010

app = importlib.import_module(f"service_{os.environ['UNGUARDED_SERVICE']}").create_app()
