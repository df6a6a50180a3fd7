"""JSON-lines logs (``PUSH_LOG_FORMAT=json``), and the signatures no log line holds.

:class:`JsonFormatter` writes each record as one line, one JSON object:
``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``message``;
``app``, ``socket_id`` and ``channel`` when known; ``exception`` (the
traceback's text) when the record carries one. Lines are ASCII: every other
character is escaped, so no message can break a line or its encoding.

What a line is about comes from :func:`about`, which the code handling a
client's message (``Session.receive``) or an HTTP API request (``api``) calls
for the lines logged meanwhile. It is a :mod:`contextvars` variable, so
concurrent tasks never mix theirs up, and it names the task that set it: a
task started meanwhile (a webhook sender, a reconnect loop) copies the
variable, as asyncio copies every context variable, but its lines are about
no client, so they show none of it. A record may also name its fields itself
(``extra={"channel": name}``).

HTTP API requests carry their signature in the query string
(``auth_signature``), which access lines and Tornado's error lines print with
the URI. :class:`RedactSignatures` blanks it in every record a handler emits,
in either format. No code logs an app secret.

``server.py`` installs both on its handlers (:func:`install`); a host
application that embeds the server may do the same on its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import json
import logging
import re
import weakref
from typing import Callable, Iterable, Mapping

#: The fields that say what a line is about, in the order lines show them.
FIELDS = ("app", "socket_id", "channel")
#: A signature's value in a query string, up to the next parameter (the server reads
#: parameter names in any case, so a signature may come as AUTH_SIGNATURE too).
_SIGNATURE = re.compile(r"(auth_signature=)[^&\s\"']*", re.IGNORECASE)
_REDACTED = r"\1[redacted]"

#: (a weak reference to the task that named them, or None outside any task; the fields).
_Named = tuple[Callable[[], "asyncio.Task | None"] | None, Mapping[str, str | None]]
_about: contextvars.ContextVar[_Named] = contextvars.ContextVar(
    "tornado_push_log_about", default=(None, {}))


def _task() -> asyncio.Task | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


def _named_in(task: asyncio.Task | None) -> Mapping[str, str | None]:
    """The fields ``task`` named (not those a parent task named before starting it)."""
    owner, named = _about.get()
    return named if named and (owner() if owner else None) is task else {}


def about(**fields: str | None) -> contextvars.Token:
    """Name what the lines this task logs from here on are about (``app``,
    ``socket_id``, ``channel``), on top of what it named before; ``None``: not
    known (left out). Returns the token :func:`restore` takes to undo it.

    About a microsecond: ``Session.receive`` calls it for every message.
    """
    task = _task()
    named = _named_in(task)
    # A weak reference: the task holds this context, which must not hold it back.
    return _about.set((weakref.ref(task) if task else None,
                       {**named, **fields} if named else fields))


def adopt() -> None:
    """Make what was named outside any task, in this context, this task's too: for work
    begun in a callback (an HTTP publish answered by the front) and carried on in a task
    made with that context."""
    owner, named = _about.get()
    task = _task()
    if owner is None and named and task is not None:
        _about.set((weakref.ref(task), named))


def restore(token: contextvars.Token) -> None:
    """Back to what lines were about before the :func:`about` that gave ``token``."""
    _about.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docstring).

    The fields come from the context of the call that logs, so the handler
    must format in that call (as ``StreamHandler`` and ``FileHandler`` do).
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
                    .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = _named_in(_task())
        for name in FIELDS:
            value = getattr(record, name, None) or context.get(name)
            if value is not None:
                line[name] = str(value)
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = _SIGNATURE.sub(_REDACTED, record.exc_text)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


class RedactSignatures(logging.Filter):
    """Replaces the value of every ``auth_signature=`` in a record's message with
    ``[redacted]``; lets every record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SIGNATURE.sub(_REDACTED, message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install(handlers: Iterable[logging.Handler], *, json_lines: bool) -> None:
    """Redact signatures on every handler in ``handlers``; with ``json_lines``, also
    format its records as JSON lines.

    Install it after :func:`lograte.limit`, which tells records apart by their
    template, before this fills the arguments in.
    """
    for handler in handlers:
        handler.addFilter(RedactSignatures())
        if json_lines:
            handler.setFormatter(JsonFormatter())
