"""Credentials in store URLs (user:password@host) never reach logs, MLflow or the console."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

# Also Hydra's escaped form in its log lines: postgresql\://user\:password@host.
_PASSWORD_IN_URL = re.compile(r"(\\?:\\?//[^:/@\s\\]+)(\\?):[^@\s]+@")


def redact(url: str) -> str:
    """The URL with any password replaced, safe to print or log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def redact_text(text: str) -> str:
    """Every user:password@ in free text (a config dump) with the password hidden."""
    return _PASSWORD_IN_URL.sub(r"\1\2:***@", text)


class RedactingFilter(logging.Filter):
    """Rewrites every record that passes a handler so that URL passwords read ***."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "@" in message:
            record.msg, record.args = redact_text(message), None
        return True


_FILTER = RedactingFilter()


def redact_logs() -> None:
    """Put the filter on every handler of the root and `hydra` loggers. Hydra replaces the
    handlers for each job, so this is called again at every job start."""
    for logger in (logging.getLogger(), logging.getLogger("hydra")):
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
