"""Logging set-up shared by every process: stable event names, ids in `extra`, optional JSON.

Two things ride along on every line without each call site passing them:

- the context of the work in hand, bound with `bound(...)` for as long as it lasts: the web app
  binds `request_id` per request, a worker binds `job_id` and `job` per job (contextvars, so
  asyncio tasks started inside inherit them, other threads do not);
- redaction, the last line of defence behind "log ids, never secrets": a field whose name says
  it holds a secret or a personal detail (`client_state`, `token`, `subject`, `account`...) is
  printed as `[redacted]`, and every secret value the process was given (`redact`) or met on
  its way (`redact_rotating`: tokens, secrets decrypted from Redis) is cut out of the finished
  line wherever it appears, tracebacks included.

One record is one line, in either format: values taken from requests (a path with `%0a`)
cannot forge a line of their own. JSON escapes every control character by itself; the text
format escapes them, and indents a traceback's lines, which no record's line starts with.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TextIO

# Attributes every LogRecord has; anything else came in through `extra=` and is worth printing.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
REDACTED = "[redacted]"
# Field names that must never carry their value into a log line: secrets, and personal details
# (an `account` or an `address` holds an email address, a `first_name` a person's name).
_SENSITIVE = re.compile(
    r"secret|token|password|passwd|client_?state|signature|authorization|cookie|subject|body"
    r"|customer|email|phone|account|address|upn|user_?name|first_?name|last_?name|display_?name",
    re.IGNORECASE,
)
# Shorter values would cut ordinary words out of lines; no real secret is this short.
_MIN_SECRET = 8
# Tokens rotate for as long as a process lives (a delegated token hourly) and every line is
# checked against every value, so only the newest values met on the way are kept.
_ROTATING_KEPT = 1024
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: each can end a line
# for some reader (a terminal, `str.splitlines`, a log shipper) or rewrite what one shows.
_CONTROLS = {
    **{c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))},
    **{ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"},
    **{c: f"\\u{c:04x}" for c in (0x2028, 0x2029)},
}

_context: ContextVar[dict[str, str]] = ContextVar("exsync_log_context")
_lasting: set[str] = set()
_rotating: dict[str, None] = {}  # newest last
_cut: tuple[str, ...] = ()  # every form of every value above, longest first
_lock = threading.Lock()


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
    with _lock:
        _lasting.update(_worth_cutting(values))
        _reorder()


def redact_rotating(*values: str | None) -> None:
    """`redact` for values met on the way (tokens, secrets decrypted from Redis): the newest
    `_ROTATING_KEPT` are cut, and a value met again is newest again, so one in use stays."""
    met = _worth_cutting(values)
    with _lock:
        new = [v for v in met if v not in _rotating]
        for value in met:
            _rotating.pop(value, None)
            _rotating[value] = None
        while len(_rotating) > _ROTATING_KEPT:
            del _rotating[next(iter(_rotating))]
        if new:
            _reorder()


def scrub(text: str) -> str:
    for secret in _cut:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _worth_cutting(values: tuple[str | None, ...]) -> list[str]:
    return [v for v in values if v and len(v) >= _MIN_SECRET]


def _reorder() -> None:
    """Longest first, so a value that holds another is cut whole; each also as a JSON line
    writes it (quotes, backslashes and non-ASCII escaped)."""
    global _cut
    forms = {form for v in (*_lasting, *_rotating) for form in (v, json.dumps(v)[1:-1])}
    _cut = tuple(sorted(forms, key=len, reverse=True))


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
        line = _escaped(scrub(self._line(record)))
        trace = self._trace(record)
        return f"{line}\n{_indented(scrub(trace))}" if trace else line

    def _line(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        extras = " ".join(f"{name}={value}" for name, value in _extras(record).items())
        return f"{line} {extras}" if extras else line

    def _trace(self, record: logging.LogRecord) -> str:
        parts = []
        if record.exc_info:
            parts.append(self.formatException(record.exc_info))
        if record.stack_info:
            parts.append(self.formatStack(record.stack_info))
        return "\n".join(parts)


def _escaped(text: str) -> str:
    return text.translate(_CONTROLS)


def _indented(trace: str) -> str:
    """A traceback stays readable, one line per line, but each is indented: a forged line in an
    exception's message cannot pass for a record's, which starts with its time."""
    return "\n".join("  " + _escaped(part) for part in trace.splitlines())


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
