"""--log.level and --log.format (logfmt or json), to stderr or to the journal."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import datetime, timezone

from ksm_exporter.model.defaults import LOG_LEVELS

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
LEVELS = LOG_LEVELS
assert tuple(_LEVELS) == LEVELS


def _logfmt_value(v: str) -> str:
    if v and not any(c in v for c in ' "=\\\n\t'):
        return v
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _head(record: logging.LogRecord) -> dict[str, str]:
    """time, level, source and msg: what both formats start a line with."""
    ts = datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
    level = "warn" if record.levelno == logging.WARNING else record.levelname.lower()
    return {"time": ts, "level": level, "source": record.module, "msg": record.getMessage()}


def _fields(record: logging.LogRecord, head: Mapping[str, object]) -> dict[str, object]:
    """The record's `fields`; one named like a head key (time, level, source, msg) gets a
    `field_` prefix, so that a line never carries the same key twice."""
    fields: dict[str, object] = getattr(record, "fields", {})
    return {(f"field_{k}" if k in head else k): v for k, v in fields.items()}


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        head = _head(record)
        head["msg"] = _logfmt_value(head["msg"])
        parts = [f"{k}={v}" for k, v in head.items()]
        for k, v in _fields(record, head).items():
            parts.append(f"{k}={_logfmt_value(str(v))}")
        if record.exc_info:
            parts.append(f"err={_logfmt_value(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        d: dict[str, object] = dict(_head(record))
        d.update(_fields(record, d))
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
    set_level(level)
    return handler


def set_level(level: str) -> None:
    """Change the level of every logger at run time (a reload)."""
    logging.getLogger().setLevel(_LEVELS[level])
