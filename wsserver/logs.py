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
        """Time (UTC, ISO 8601, in ms), level, logger, pid, message, any exception."""
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
    """Log to stderr as text lines, or as JSON with ``format="json"``.

    Replaces any handler already configured. websockets' own logs need at least
    WARNING: the sidecar logs what matters about connections itself.
    """
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


def mask_url(url: str, mask: str = "***") -> str:
    """Hide the secrets in a URL so it can be logged or printed.

    The password becomes ``mask``, and so does the value of every query
    parameter whose name looks secret (password=, token=, api_key=...); the
    rest of the URL stays readable. A password with an unescaped "/", "?",
    "#" or "@" makes the URL's parts shift: then everything up to the last
    "@" is hidden.
    """
    # A query parameter whose name contains one of these holds a secret, e.g.
    # password, passwd, sslpassword, pwd, client_secret, access_token, api_key,
    # sslkey, auth, credentials, signature.
    secret_words = (
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "auth",
        "credential",
        "sig",
    )

    def masked_parameter(parameter: str) -> str:
        name, equals, value = parameter.partition("=")
        lowered = urllib.parse.unquote_plus(name).lower()
        if equals and value and any(word in lowered for word in secret_words):
            return f"{name}={mask}"
        return parameter

    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    after_netloc = url[url.index("//") + 2 + len(netloc) :] if netloc else ""
    if netloc and ("@" in parts.path or ("@" not in netloc and "@" in after_netloc)):
        # "redis://:pass/word@host/0": urlsplit sees the host ":pass" and the
        # path "/word@host/0". What follows the last "@" is the real host on.
        return mask_url(f"{parts.scheme}://{mask}@{url.rsplit('@', 1)[1]}", mask)
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:{mask}@{host}"
    query = "&".join(masked_parameter(p) for p in parts.query.split("&"))
    if netloc == parts.netloc and query == parts.query:
        return url
    # Not urlunsplit(), which would drop the empty netloc of "unix:///path".
    slashes = url[len(parts.scheme) + 1 :].startswith("//")
    return "".join(
        [
            f"{parts.scheme}:",
            f"//{netloc}" if slashes else "",
            parts.path,
            f"?{query}" if query else "",
            f"#{parts.fragment}" if parts.fragment else "",
        ]
    )
