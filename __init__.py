"""tornado_push: a Pusher protocol 7 push server on Tornado.

Run it with ``python server.py`` (a checkout) or ``python -m tornado_push``
(installed), or embed it in your own Tornado app with :class:`Push`
(see docs/embedding.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .embed import Push, TriggerRefused
    from .handlers.front import PushHTTPServer
    from .pubsub.apps import App
    from .pubsub.errors import BrokerUnavailable
    from .pubsub.history.mongo import MongoHistoryStore
    from .settings import Settings, SettingsError, load_settings

#: The public names, each from its module.
_EXPORTS = {"Push": ".embed", "TriggerRefused": ".embed", "PushHTTPServer": ".handlers.front",
            "App": ".pubsub.apps",
            "BrokerUnavailable": ".pubsub.errors", "Settings": ".settings",
            "SettingsError": ".settings", "load_settings": ".settings",
            "MongoHistoryStore": ".pubsub.history.mongo"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name on first use.

    The checkout's root is this package, so pytest imports this file on its
    own, outside any package, while it collects the tests: importing nothing
    here at once keeps that harmless.
    """
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __package__), name)
