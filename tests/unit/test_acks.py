"""The one private python-socketio override (ingest/acks.py), pinned to the library's behaviour.

If python-socketio renames `_handle_event_internal`, changes its arguments or stops calling the
namespace from it, these tests fail before any client notices a missing acknowledgement.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import socketio

from ingest.acks import WITH_ACK, WITHOUT_ACK, AckAwareServer, ClientEvent


def test_the_overridden_method_still_has_the_signature_it_was_written_for():
    method = socketio.AsyncServer._handle_event_internal
    assert inspect.iscoroutinefunction(method)
    assert list(inspect.signature(method).parameters) == [
        "self",
        "server",
        "sid",
        "eio_sid",
        "data",
        "namespace",
        "id",
    ]


class Recorder(socketio.AsyncNamespace):
    def __init__(self) -> None:
        super().__init__("/")
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.called = asyncio.Event()

    async def trigger_event(self, event: str, *args: Any) -> Any:
        self.calls.append((event, args))
        self.called.set()
        return {"ok": True} if event != "connect" else None


async def received(server: AckAwareServer, recorder: Recorder, message: str) -> tuple[Any, ...]:
    recorder.called.clear()
    await server._handle_eio_message("eio-1", message)
    await asyncio.wait_for(recorder.called.wait(), 2)
    return recorder.calls[-1]


async def test_handlers_are_told_whether_the_client_asked_for_an_acknowledgement():
    server = AckAwareServer(async_mode="asgi")
    recorder = Recorder()
    server.register_namespace(recorder)
    sent: list[str] = []

    async def send(eio_sid: str, data: str) -> None:
        sent.append(data)

    server.eio.send = send  # type: ignore[method-assign]
    await server._handle_eio_connect("eio-1", {})
    event, (sid, *_rest) = await received(server, recorder, "0{}")
    assert event == "connect"

    assert await received(server, recorder, '2["ping",{"n":1}]') == (
        "ping",
        (sid, WITHOUT_ACK, {"n": 1}),
    )
    assert await received(server, recorder, '27["ping",{"n":2}]') == (
        "ping",
        (sid, WITH_ACK, {"n": 2}),
    )
    await asyncio.sleep(0.05)
    # The handler's return value went back as the acknowledgement of the second only.
    assert sent[-1] == '37[{"ok":true}]'
    assert not any(s.startswith("3") for s in sent[:-1])


async def test_a_client_event_named_disconnect_is_marked_as_a_client_event():
    server = AckAwareServer(async_mode="asgi")
    recorder = Recorder()
    server.register_namespace(recorder)

    async def send(eio_sid: str, data: str) -> None:
        pass

    server.eio.send = send  # type: ignore[method-assign]
    await server._handle_eio_connect("eio-1", {})
    await received(server, recorder, "0{}")
    event, args = await received(server, recorder, '2["disconnect"]')
    assert event == "disconnect" and isinstance(args[1], ClientEvent)
