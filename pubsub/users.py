"""Signed-in users: their connections, who watches them, and terminate.

:class:`Users` coordinates across processes: who is online is the cluster
state's to say, and notices for other processes (a watched user came online,
terminate a user) travel as broker control messages that every process
handles (:meth:`Users.register_control` gives their types to the hub's
dispatcher). :class:`UserDirectory` is one app's view on this process.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterable

from . import protocol
from .apps import App, AppRegistry
from .broker import Broker
from .control import ControlDispatcher
from .errors import ErrorCode
from .state import ClusterState

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger(__name__)

# Control messages every process receives.
_TERMINATE = "terminate"
_WATCHED = "watched"


class UserDirectory:
    """Each signed-in user's connections, and the reverse index of watchlists.

    A user is online while at least one of its connections is signed in.
    """

    __slots__ = ("_connections", "_watchers")

    def __init__(self) -> None:
        self._connections: dict[str, dict[str, Session]] = {}
        self._watchers: dict[str, dict[str, Session]] = {}

    def sign_in(self, session: Session, user_id: str, watchlist: Iterable[str]) -> None:
        """Record a signed-in connection and what it watches."""
        self._connections.setdefault(user_id, {})[session.socket_id] = session
        for watched in watchlist:
            self._watchers.setdefault(watched, {})[session.socket_id] = session

    def sign_out(self, session: Session, user_id: str, watchlist: Iterable[str]) -> None:
        """Forget a closed connection."""
        for watched in watchlist:
            watchers = self._watchers.get(watched)
            if watchers is not None:
                watchers.pop(session.socket_id, None)
                if not watchers:
                    del self._watchers[watched]
        connections = self._connections.get(user_id)
        if connections is not None:
            connections.pop(session.socket_id, None)
            if not connections:
                del self._connections[user_id]

    def connections(self, user_id: str) -> list[Session]:
        return list(self._connections.get(user_id, {}).values())

    def watchers(self, user_id: str) -> list[Session]:
        return list(self._watchers.get(user_id, {}).values())


class Users:
    """Signed-in users of every app, across processes."""

    def __init__(self, apps: AppRegistry, broker: Broker, state: ClusterState) -> None:
        self._directories = {app.id: UserDirectory() for app in apps}
        self._broker = broker
        self._state = state

    def add_app(self, app: App) -> None:
        """Serve ``app``'s users too (an app a reload added)."""
        self._directories.setdefault(app.id, UserDirectory())

    async def sign_in(self, session: Session) -> None:
        """Register a signed-in connection; tell watchers when its user comes online."""
        app, user_id = session.app, session.user_id
        assert user_id is not None
        self._directories[app.id].sign_in(session, user_id, session.watchlist)
        if await self._state.sign_in(app.id, user_id, session.socket_id):
            await self.announce(app.id, user_id, "online")
        if session.watchlist:
            online = await self._state.online(app.id, session.watchlist)
            groups = (("online", [u for u in session.watchlist if u in online]),
                      ("offline", [u for u in session.watchlist if u not in online]))
            events = [{"name": name, "user_ids": ids} for name, ids in groups if ids]
            session.send(protocol.encode_event(protocol.WATCHLIST_EVENTS, {"events": events}))

    async def sign_out(self, session: Session, again: bool = False) -> None:
        """Forget a closed session's sign-in; "offline" to the user's watchers if it was
        the last. ``again``: a retry of a sign-out Redis did not answer (ClusterState.sign_out)."""
        app, user_id = session.app, session.user_id
        assert user_id is not None
        self._directories[app.id].sign_out(session, user_id, session.watchlist)
        if await self._state.sign_out(app.id, user_id, session.socket_id, again=again):
            await self.announce(app.id, user_id, "offline")

    async def announce(self, app_id: str, user_id: str, name: str) -> None:
        """Tell every process's watchers of ``user_id`` that it is ``online`` or ``offline``."""
        await self._broker.broadcast({"type": _WATCHED, "app": app_id, "user": user_id,
                                      "name": name})

    async def terminate(self, app: App, user_id: str) -> None:
        """Close every connection of a signed-in user, in every process (4009: no retry)."""
        await self._broker.broadcast({"type": _TERMINATE, "app": app.id, "user": user_id})

    def register_control(self, dispatcher: ControlDispatcher) -> None:
        """Handle the control messages this class sends (terminate, watchlist notices)."""
        dispatcher.register(_TERMINATE, self._on_terminate)
        dispatcher.register(_WATCHED, self._on_watched)

    def _addressee(self, message: dict[str, Any]) -> tuple[UserDirectory, str] | None:
        """The directory and user a control message names; None (logged) if it names none."""
        directory = self._directories.get(message.get("app", ""))
        user_id = message.get("user")
        if directory is None or not isinstance(user_id, str):
            log.warning("ignoring control message %r", message)
            return None
        return directory, user_id

    def _on_terminate(self, message: dict[str, Any]) -> None:
        if (addressee := self._addressee(message)) is not None:
            directory, user_id = addressee
            for session in directory.connections(user_id):
                session.close(ErrorCode.UNAUTHORIZED, "Connection terminated by the app")

    def _on_watched(self, message: dict[str, Any]) -> None:
        if (addressee := self._addressee(message)) is None:
            return
        if message.get("name") in ("online", "offline"):
            self._tell_watchers(*addressee, message["name"])
        else:
            log.warning("ignoring control message %r", message)

    @staticmethod
    def _tell_watchers(directory: UserDirectory, user_id: str, name: str) -> None:
        watchers = directory.watchers(user_id)
        if watchers:
            frame = protocol.encode_event(protocol.WATCHLIST_EVENTS,
                                          {"events": [{"name": name, "user_ids": [user_id]}]})
            for watcher in watchers:
                watcher.send(frame)
