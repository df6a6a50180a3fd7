"""A bare WebSocket client that speaks the history extension (docs/history.md).

It does what a browser client of the extension does: it keeps each
channel's position (epoch and last offset) from the frames it receives,
checks that offsets come in order without gaps, and resubscribes with
``resume`` from that position on a new connection::

    client = await HistoryClient.open(port)
    await client.subscribe("history-room")              # plain: its position starts here
    await client.events("history-room", 3)              # three messages, offsets checked
    client.close()
    client = await client.reopen(other_port)            # the positions carry over
    outcome = await client.subscribe("history-room")    # resumes; replayed frames kept
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import tornado.websocket

from conftest import MAIN, RawSocket
from tornado_push.pubsub.apps import App
from tornado_push.pubsub.signing import channel_auth_message, sign

#: Events of the extension that end a resume.
RESUME_OUTCOMES = ("pusher_internal:resume_succeeded", "pusher_internal:resume_failed")


@dataclass
class Subscribed:
    """What a subscribe got: the ``subscription_succeeded`` frame, the messages replayed
    after it, and the resume outcome's data (None for a plain subscribe)."""

    succeeded: dict[str, Any]
    replayed: list[dict[str, Any]] = field(default_factory=list)
    outcome: str | None = None
    outcome_data: dict[str, Any] | None = None


class HistoryClient:
    """One connection of a client that keeps its positions across connections."""

    def __init__(self, socket: RawSocket, app: App,
                 positions: dict[str, tuple[str, int]] | None = None) -> None:
        self.socket = socket
        self.app = app
        #: channel → (epoch, last offset received)
        self.positions: dict[str, tuple[str, int]] = positions or {}

    @classmethod
    async def open(cls, port: int, app: App = MAIN,
                   positions: dict[str, tuple[str, int]] | None = None) -> HistoryClient:
        connection = await tornado.websocket.websocket_connect(
            f"ws://127.0.0.1:{port}/app/{app.key}?protocol=7")
        socket = RawSocket(connection)
        frame = await socket.receive()
        assert frame is not None and frame["event"] == "pusher:connection_established", frame
        socket.socket_id = json.loads(frame["data"])["socket_id"]
        return cls(socket, app, positions)

    async def reopen(self, port: int) -> HistoryClient:
        """A new connection (to any process) that remembers this one's positions."""
        self.close()
        return await HistoryClient.open(port, self.app, dict(self.positions))

    def close(self) -> None:
        self.socket.close()

    async def subscribe(self, channel: str, *, resume: bool = True,
                        resume_from: tuple[str, int] | None = None) -> Subscribed:
        """Subscribe, resuming from the held position (or ``resume_from``) if there is one;
        return once the subscription (and the resume) is answered."""
        data: dict[str, Any] = {"channel": channel}
        if channel.startswith("private-"):
            data["auth"] = f"{self.app.key}:" + sign(
                self.app.secret, channel_auth_message(self.socket.socket_id, channel))
        position = resume_from or (self.positions.get(channel) if resume else None)
        if position is not None:
            data["resume"] = {"epoch": position[0], "offset": position[1]}
        await self.socket.send({"event": "pusher:subscribe", "data": data})
        succeeded = await self.socket.expect("pusher_internal:subscription_succeeded")
        result = Subscribed(succeeded)
        if position is None:
            if "epoch" in succeeded:
                self.positions[channel] = (succeeded["epoch"], succeeded["offset"])
            return result
        while True:
            frame = await self.socket.receive()
            assert frame is not None, f"closed while resuming {channel}"
            if frame["event"] in RESUME_OUTCOMES:
                result.outcome = frame["event"].split(":")[1]
                result.outcome_data = json.loads(frame["data"])
                # Succeeded: already there; failed: live messages go on from here.
                self.positions[channel] = (result.outcome_data["epoch"],
                                           result.outcome_data["offset"])
                return result
            self._advance(frame, position)
            position = self.positions[channel]
            result.replayed.append(frame)

    async def events(self, channel: str, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The next ``count`` messages on the channel, checking each offset follows the last."""
        frames = []
        while len(frames) < count:
            frame = await self.socket.receive(timeout)
            assert frame is not None, f"closed ({self.socket.close_code}) while reading {channel}"
            if frame.get("channel") != channel or frame["event"].startswith("pusher"):
                continue
            self._advance(frame, self.positions[channel])
            frames.append(frame)
        return frames

    def _advance(self, frame: dict[str, Any], position: tuple[str, int]) -> None:
        epoch, offset = frame.get("epoch"), frame.get("offset")
        assert (epoch, offset) == (position[0], position[1] + 1), (
            f"after {position} got {frame}: not the next offset")
        self.positions[frame["channel"]] = (epoch, offset)

    async def trigger(self, channel: str, event: str, data: Any) -> None:
        """A client event (the app must allow them, on a private or presence channel)."""
        await self.socket.send({"event": event, "channel": channel, "data": data})


def numbers(frames: list[dict[str, Any]]) -> list[str]:
    """The event data of frames whose data is ``{"n": ...}``, for compact assertions."""
    return [json.loads(frame["data"])["n"] for frame in frames]
