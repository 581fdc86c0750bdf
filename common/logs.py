"""One log format for every process: text for people (the default), or one JSON object a line
for log shippers (LOG_FORMAT=json). Either way, what users typed cannot forge a line."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

from opentelemetry import trace

TEXT_FORMAT = "%(asctime)s %(levelname)s %(process_name)s %(name)s: %(message)s"
SAGA_ID = re.compile(r"\bsaga ([0-9a-f]{32})\b")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")


def current_trace_id() -> str | None:
    """The trace id (32 hex digits) of the span this thread is in, if any."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def escape(text: str) -> str:
    """Control characters (a newline, say) and lone surrogates as visible escapes."""
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape", "backslashreplace")
                        .decode("ascii"), text)


class ContextFilter(logging.Filter):
    """Adds the process name, and the saga id, step, attempt and trace id where known."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_name = self.process
        if getattr(record, "saga_id", None) is None:
            # Format the message once, here, and keep it (the formatter would do it again).
            record.msg, record.args = record.getMessage(), None
            match = SAGA_ID.search(record.msg)
            record.saga_id = match.group(1) if match else None
        if getattr(record, "trace_id", None) is None:
            record.trace_id = current_trace_id()
        return True


class TextFormatter(logging.Formatter):
    """The plain format, with the message escaped (the traceback keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, process, saga_id, step, attempt, trace_id, message."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
            "level": record.levelname,
            "process": getattr(record, "process_name", None),
            "logger": record.name,
            "saga_id": getattr(record, "saga_id", None),
            "step": getattr(record, "step", None),
            "attempt": getattr(record, "attempt", None),
            "trace_id": getattr(record, "trace_id", None),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=True)


def configure_logging(level: str = "INFO", process: str = "-", json_lines: bool = False) -> None:
    """Log to stderr in one format, once per process."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_saga_handler", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter(TEXT_FORMAT))
    handler.addFilter(ContextFilter(process))
    handler._saga_handler = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
