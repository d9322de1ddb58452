"""Logging set-up shared by every process: stable event names, ids in `extra`, optional JSON.

Two things ride along on every line without each call site passing them:

- the context of the work in hand, bound with `bound(...)` for as long as it lasts: the web app
  binds `request_id` per request, a worker binds `job_id` and `job` per job (contextvars, so
  asyncio tasks started inside inherit them, other threads do not);
- redaction, the last line of defence behind "log ids, never secrets": a field whose name says
  it holds a secret or a personal detail (`client_state`, `token`, `subject`...) is printed as
  `[redacted]`, and every secret value the process was given (`redact`) is cut out of the
  finished line wherever it appears, tracebacks included.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TextIO

# Attributes every LogRecord has; anything else came in through `extra=` and is worth printing.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
REDACTED = "[redacted]"
# Field names that must never carry their value into a log line.
_SENSITIVE = re.compile(
    r"secret|token|password|passwd|client_?state|signature|authorization|cookie|subject|body"
    r"|customer|email|phone",
    re.IGNORECASE,
)
# Shorter values would cut ordinary words out of lines; no real secret is this short.
_MIN_SECRET = 8

_context: ContextVar[dict[str, str]] = ContextVar("exsync_log_context")
_secrets: set[str] = set()


@contextmanager
def bound(**fields: str) -> Iterator[None]:
    """Add these fields to every line logged (in this thread or task) until the block ends."""
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def bind(**fields: str) -> Token[dict[str, str]]:
    """`bound` for hooks that start and end in different functions (a request's)."""
    return _context.set({**_context.get({}), **fields})


def unbind(token: Token[dict[str, str]]) -> None:
    _context.reset(token)


def redact(*values: str | None) -> None:
    """Cut these values out of every line this process logs from now on."""
    _secrets.update(v for v in values if v and len(v) >= _MIN_SECRET)


def scrub(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class _Context(logging.Filter):
    """Copies the bound context onto each record (explicit `extra=` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get({}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for name, value in _extras(record).items():
            # An `extra` named like one of the fixed keys must not replace the event name.
            entry[f"{name}_" if name in entry else name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return scrub(json.dumps(entry, default=str))


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{name}={value}" for name, value in _extras(record).items())
        return scrub(f"{line} {extras}" if extras else line)


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {
        k: REDACTED if _SENSITIVE.search(k) else v
        for k, v in vars(record).items()
        if k not in _STANDARD and not k.startswith("_")
    }


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a line is logged (test runners swap it)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        return


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Route every logger to stderr in the chosen format; quiet the chatty HTTP libraries.

    Calling it again replaces only our own handler, so a host's handlers (gunicorn's, a test
    runner's) stay in place.
    """
    handler = _Stderr()
    handler.addFilter(_Context())
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _Stderr)] + [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "azure", "msal", "urllib3", "werkzeug", "amqp", "kombu"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
