"""The one private python-socketio override: whether the client asked for an acknowledgement.

python-socketio sends a handler's return value as the acknowledgement but does not tell the
handler whether one was asked for, and docs/protocol.md answers with an event when it was not.
`AckAwareServer` passes a `ClientEvent` as the first argument after the sid of every event a
client sends; nothing else is changed (tests/unit/test_acks.py fails if the library changes
under it). Everything else (drain, expiry, after-answer work) uses public seams.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import socketio


class ClientEvent(NamedTuple):
    """Marks a handler call as an event a client sent, and says whether it wants an ack.

    The library's own `connect`/`disconnect` calls never carry it, so a client emitting an event
    named `disconnect` is told apart from a real disconnect.
    """

    ack: bool


WITH_ACK = ClientEvent(ack=True)
WITHOUT_ACK = ClientEvent(ack=False)


class AckAwareServer(socketio.AsyncServer):
    """AsyncServer whose event handlers get a `ClientEvent` before the event's arguments."""

    async def _handle_event_internal(
        self, server: Any, sid: str, eio_sid: str, data: Any, namespace: str, id: Any
    ) -> None:
        marked = [data[0], WITHOUT_ACK if id is None else WITH_ACK, *data[1:]]
        await super()._handle_event_internal(server, sid, eio_sid, marked, namespace, id)
