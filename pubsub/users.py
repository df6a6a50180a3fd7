"""Signed-in users of one app on this process, and who watches them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from pubsub.session import Session


class UserDirectory:
    """Each signed-in user's connections, and the reverse index of watchlists.

    A user is online while at least one of its connections is signed in.
    """

    __slots__ = ("_connections", "_watchers")

    def __init__(self) -> None:
        self._connections: dict[str, dict[str, Session]] = {}
        self._watchers: dict[str, dict[str, Session]] = {}

    def sign_in(self, session: Session, user_id: str, watchlist: Iterable[str]) -> bool:
        """Record a signed-in connection; True if its user just came online."""
        connections = self._connections.setdefault(user_id, {})
        connections[session.socket_id] = session
        for watched in watchlist:
            self._watchers.setdefault(watched, {})[session.socket_id] = session
        return len(connections) == 1

    def sign_out(self, session: Session, user_id: str, watchlist: Iterable[str]) -> bool:
        """Forget a closed connection; True if its user just went offline."""
        for watched in watchlist:
            watchers = self._watchers.get(watched)
            if watchers is not None:
                watchers.pop(session.socket_id, None)
                if not watchers:
                    del self._watchers[watched]
        connections = self._connections.get(user_id)
        if connections is None or connections.pop(session.socket_id, None) is None:
            return False
        if connections:
            return False
        del self._connections[user_id]
        return True

    def connections(self, user_id: str) -> list[Session]:
        return list(self._connections.get(user_id, {}).values())

    def watchers(self, user_id: str) -> list[Session]:
        return list(self._watchers.get(user_id, {}).values())
