"""JSON log lines on stdout, one object per line, with ``severity`` as Cloud Logging reads it.

Entry points call ``configure_logging`` once; importing this module changes nothing.
Extra fields passed with ``extra={"job_id": ...}`` are carried into the line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, static: dict[str, str]) -> None:
        super().__init__()
        self._static = static

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "severity": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            **self._static,
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str, **static: str) -> None:
    """Send every log record to stdout as JSON, with ``static`` fields (function, model...)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(static))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_per_call_loggers(level)


# Libraries that log a line per call at INFO: httpx's "HTTP Request: GET ..." for every
# readiness probe and every call a proxy makes drowns what a person wants to read.
PER_CALL_LOGGERS = ("httpx", "httpcore")


def quiet_per_call_loggers(level: str | int) -> None:
    """Keep the per-call loggers at WARNING unless ``level`` is DEBUG."""
    number = logging.getLevelName(level) if isinstance(level, str) else level
    for name in PER_CALL_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.NOTSET if number <= logging.DEBUG else logging.WARNING
        )
