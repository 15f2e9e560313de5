"""Logging set-up: human-readable lines, or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
import time
import urllib.parse

__all__ = ["JSONFormatter", "configure_logging", "mask_url"]


class JSONFormatter(logging.Formatter):
    """One JSON object per record, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def configure_logging(level: str, format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"
            )
        )
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # websockets logs every failed handshake and connection at INFO/DEBUG;
    # the sidecar logs what matters itself.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, logging.root.level))


def mask_url(url: str) -> str:
    """Hide the password in a URL so it can be logged."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
