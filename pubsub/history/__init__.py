"""Message history: each channel's recent publications with offsets and an epoch.

``base`` holds the interface (:class:`HistoryStore`) and its values;
``memory`` the embedded default. The Redis store (``redis``) and the MongoDB
store (``mongo``) import their drivers, so they are imported where chosen.
"""

from .base import Entry, HistoryStore, Page, Retention
from .memory import MemoryHistoryStore

__all__ = ["Entry", "HistoryStore", "MemoryHistoryStore", "Page", "Retention"]
