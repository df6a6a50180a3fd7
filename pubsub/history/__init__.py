"""Message history: each channel's recent publications with offsets and an epoch.

``base`` holds the interface (:class:`HistoryStore`) and its values.
"""

from .base import Entry, HistoryStore, Page, Retention

__all__ = ["Entry", "HistoryStore", "Page", "Retention"]
