"""Control messages by type: the one dispatcher of what every process receives.

The broker hands each control message (a JSON object every process gets, see
:meth:`~pubsub.broker.Broker.broadcast`) to :class:`ControlDispatcher`, which
passes it to the handler registered for its ``type``. Users (terminate, watchlist
notices), the debug console and node drains each register their own types.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger(__name__)

#: Handles one control message of the type it was registered for.
ControlHandler = Callable[[dict[str, Any]], None]


class ControlDispatcher:
    """Routes each control message to the one handler of its ``type``; others are logged."""

    def __init__(self) -> None:
        self._handlers: dict[str, ControlHandler] = {}

    def register(self, kind: str, handler: ControlHandler) -> None:
        """Send messages whose ``type`` is ``kind`` to ``handler``; one handler per type."""
        if kind in self._handlers:
            raise ValueError(f"control messages of type {kind!r} already have a handler")
        self._handlers[kind] = handler

    def __call__(self, message: dict[str, Any]) -> None:
        handler = self._handlers.get(message.get("type")) if isinstance(message, dict) else None
        if handler is None:
            log.warning("ignoring control message %r", message)
        else:
            handler(message)
