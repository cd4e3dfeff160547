"""Structured JSON logs for the gateway's own loggers (``gateway.*``). Log records carry ids,
kinds, statuses and counts — never member data: messages are written with ids only, and
pyx12 (which logs element values) is silenced in :mod:`gateway.x12.ig`."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

FIELDS = ("submission_id", "partner", "kind", "channel", "status", "size", "findings", "method",
          "route", "duration_ms")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
                 "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        for name in FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        return json.dumps(entry)


def configure(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gateway")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
