"""--log.level and --log.format (logfmt or json), to stderr or to the journal."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

LEVELS = ("debug", "info", "warn", "error")


def _level(name: str) -> int:
    return {
        "debug": logging.DEBUG,
        "info": logging.INFO,
        "warn": logging.WARNING,
        "error": logging.ERROR,
    }[name]


def _logfmt_value(v: str) -> str:
    if v and not any(c in v for c in ' "=\\\n\t'):
        return v
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
        level = "warn" if record.levelno == logging.WARNING else record.levelname.lower()
        parts = [
            f"time={ts}",
            f"level={level}",
            f"source={record.module}",
            f"msg={_logfmt_value(record.getMessage())}",
        ]
        for k, v in getattr(record, "fields", {}).items():
            parts.append(f"{k}={_logfmt_value(str(v))}")
        if record.exc_info:
            parts.append(f"err={_logfmt_value(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
        level = "warn" if record.levelno == logging.WARNING else record.levelname.lower()
        d: dict[str, object] = {
            "time": ts,
            "level": level,
            "source": record.module,
            "msg": record.getMessage(),
        }
        d.update(getattr(record, "fields", {}))
        if record.exc_info:
            d["err"] = self.formatException(record.exc_info)
        return json.dumps(d)


def configure(level: str, fmt: str, handler: logging.Handler | None = None) -> logging.Handler:
    """Route every log record to `handler` alone (default: stderr), formatted as `fmt`."""
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(_level(level))
    return handler
