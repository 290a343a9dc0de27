"""What a connection may send below the events: Engine.IO/Socket.IO framing, binary, silence.

Three guards, each where python-socketio lets an application in through a public seam:

- `StrictPacket` (the server's `serializer`): decodes only the Socket.IO packets a client of
  ours sends — CONNECT, DISCONNECT and, once connected, EVENT `["name", ...]`. Binary packets are
  refused at their header, so their attachments are never buffered (no event carries binary
  data), and so are client acknowledgements (the server asks for none), unreadable packets,
  events before connect and events with a reserved name (`disconnect`, ...).
- `TransportGuard` (ASGI middleware around the Socket.IO app): refuses websocket frames that are
  not Engine.IO text packets, or larger than the Engine.IO limit (close code 1009), before
  python-engineio parses them; closes a connection as soon as one refusal is made on it, as the
  reference JavaScript server does on a parse error.
- `ConnectionSweep`: closes an Engine.IO connection that has joined no namespace within
  `STREAMSTATS_CONNECT_TIMEOUT` (the JavaScript server's `connectTimeout`), and one that stopped
  answering pings, in place of python-engineio's monitor task (off: ingest/transport.py), which
  woke every `ping_timeout / sockets`: 500 times a second at 10,000 connections.

A refused packet is the client's fault, not the server's: it is counted in
`streamstats_malformed_packets_total`, logged at most once per `LOG_EVERY` seconds for the whole
process, and the traceback python-engineio would log for it is dropped (`_DropRefused`).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import socketio
from socketio import packet as sio_packet

from ingest import metrics
from ingest.ratelimit import LogLimiter
from streamstats.settings import Settings

logger = logging.getLogger(__name__)

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

# One log line at most this often, whatever the number of refusals (the metric counts them all).
LOG_EVERY = 10.0
# Engine.IO v4 packet types a client sends: close, ping, pong, message, upgrade, noop.
_ENGINE_TYPES = frozenset("123456")
# Socket.IO v5 packet types a client of ours sends.
_SOCKET_TYPES = frozenset("012")
_BINARY_TYPES = frozenset("56")
# Event names the Socket.IO protocol reserves (the JavaScript client refuses to emit them);
# python-socketio would run its own `connect`/`disconnect` handlers for them.
_RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)
# The longest pause between two sweeps of the connections (ConnectionSweep).
PING_CHECK_EVERY = 5.0
# The longest the sweep waits for one connection to close.
CLOSE_TIMEOUT = 5.0
# Close codes (RFC 6455): policy violation, message too big.
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009


class MalformedPacket(ValueError):
    """A packet a client of this server never sends."""


@dataclass
class Peer:
    """One client connection as the guards see it, while its frames are decoded."""

    manager: Any
    address: str
    eio_sid: str | None = None
    # Why the connection is to be closed, once a packet was refused.
    condemned: str | None = None
    close_code: int = POLICY_VIOLATION
    # The websocket's ASGI send (None for long-polling requests), to close it from elsewhere.
    send: Send | None = None
    _closed: bool = False

    def joined(self, namespace: str) -> bool:
        """Whether the connection completed the Socket.IO connect to `namespace`."""
        if self.eio_sid is None:
            return True  # not known here: python-socketio decides
        return self.manager.sid_from_eio_sid(self.eio_sid, namespace) is not None

    def refuse(self, kind: str, reason: str, close_code: int = POLICY_VIOLATION) -> None:
        """Count the refusal, log it (rate-limited) and mark the connection to be closed."""
        _refused(kind, reason, self.address)
        self.condemn(reason, close_code)

    def condemn(self, reason: str, close_code: int = POLICY_VIOLATION) -> None:
        if self.condemned is None:
            self.condemned, self.close_code = reason, close_code

    async def close_websocket(self) -> None:
        """Close the websocket now; its pending receive() then ends python-engineio's loop."""
        if self.send is not None and not self._closed:
            self._closed = True
            await self.send({"type": "websocket.close", "code": self.close_code})


# The connection whose frames are being decoded: set per request by TransportGuard, read by
# StrictPacket, whose decode() python-socketio calls with the packet text alone.
_peer: contextvars.ContextVar[Peer | None] = contextvars.ContextVar("peer", default=None)


_log_limit = LogLimiter(LOG_EVERY)


def _refused(kind: str, reason: str, address: str) -> None:
    metrics.malformed(kind)
    held = _log_limit.allow()
    if held is None:
        return
    logger.warning(
        "refused a packet from %s and closed its connection: %s (%d more refused since the "
        "last such line)",
        address,
        reason,
        held,
        extra={"action": "packet_refused", "kind": kind, "client": address},
    )


def _refuse(kind: str, reason: str) -> NoReturn:
    peer = _peer.get()
    if peer is None:
        _refused(kind, reason, "?")
    else:
        peer.refuse(kind, reason)
    raise MalformedPacket(reason)


class StrictPacket(socketio.packet.Packet):
    """Socket.IO packets, decoding only what a client of this server sends (module docstring)."""

    def decode(self, encoded_packet: Any) -> int:
        if not isinstance(encoded_packet, str):
            _refuse("binary", "binary data (no event carries any)")
        kind = encoded_packet[:1]
        if kind not in _SOCKET_TYPES:
            if kind in _BINARY_TYPES:
                _refuse("binary", "a binary packet (no event carries binary data)")
            _refuse("socketio", f"Socket.IO packet type {kind!r} is not sent by clients")
        try:
            attachments: int = super().decode(encoded_packet)
        except ValueError as exc:
            _refuse("socketio", f"unreadable Socket.IO packet: {exc}")
        if self.packet_type == sio_packet.EVENT:
            data = self.data
            if not (isinstance(data, list) and data and isinstance(data[0], str)):
                _refuse("socketio", 'an event is not a ["name", ...] array')
            if data[0] in _RESERVED_EVENTS:
                _refuse("socketio", f"an event named {data[0]!r}, which Socket.IO reserves")
            peer = _peer.get()
            if peer is not None and not peer.joined(self.namespace or "/"):
                _refuse("socketio", "an event before the Socket.IO connect")
        return attachments


class _DropRefused(logging.Filter):
    """Drops python-engineio's traceback for a packet already refused (and counted) here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], MalformedPacket))


_DROP_REFUSED = _DropRefused()


class TransportGuard:
    """ASGI middleware in front of the Socket.IO app (module docstring)."""

    def __init__(self, app: ASGIApp, sio: socketio.AsyncServer, path: str = "/socket.io"):
        self.app = app
        self.sio = sio
        self.path = path
        # Open websockets by Engine.IO session id, so that the connect timeout can close them.
        self.websockets: dict[str, Peer] = {}

    async def close(self, eio_sid: str, reason: str) -> None:
        """Close an Engine.IO connection: its websocket at once, or its long-polling session."""
        peer = self.websockets.get(eio_sid)
        if peer is None:
            socket = self.sio.eio.sockets.get(eio_sid)
            if socket is not None:
                # Not `eio.disconnect`: it waits until the CLOSE packet is polled, which a client
                # with no poll outstanding never does. The sweep forgets the closed socket.
                await socket.close(wait=False)
            return
        peer.condemn(reason)
        await peer.close_websocket()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("websocket", "http") or not scope.get("path", "").startswith(self.path):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        peer = Peer(self.sio.manager, f"{client[0]}:{client[1]}" if client else "?")
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        peer.eio_sid = query.get("sid", [None])[0]
        token = _peer.set(peer)
        try:
            if kind == "websocket":
                peer.send = send
                if peer.eio_sid is not None:  # an upgrade from long-polling
                    self.websockets[peer.eio_sid] = peer
                await self.app(scope, self._frames(peer, receive), self._opening(peer, send))
            elif scope.get("method") == "POST" and peer.eio_sid is not None:
                await self._post(peer, scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            _peer.reset(token)
            if peer.eio_sid is not None and self.websockets.get(peer.eio_sid) is peer:
                del self.websockets[peer.eio_sid]

    async def _post(
        self, peer: Peer, scope: MutableMapping[str, Any], receive: Receive, send: Send
    ) -> None:
        """Long-polling packets from the client: refused like websocket frames, or passed on."""
        assert peer.eio_sid is not None
        limit = self.sio.eio.max_http_buffer_size
        body = b""
        more = True
        while more and len(body) <= limit:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
        problem = _payload_problem(body, limit)
        if problem is None:
            replay: Message | None = {"type": "http.request", "body": body, "more_body": False}

            async def replayed() -> Message:
                nonlocal replay
                if replay is None:
                    return await receive()
                message, replay = replay, None
                return message

            await self.app(scope, replayed, send)
        else:
            peer.refuse(*problem)
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": problem[1].encode()})
        if peer.condemned is not None:
            too_big = peer.close_code == MESSAGE_TOO_BIG
            metrics.dropped("oversize" if too_big else "malformed")
            await self.sio.eio.disconnect(peer.eio_sid)

    def _frames(self, peer: Peer, receive: Receive) -> Receive:
        """The websocket's receive(), refusing frames python-engineio should never parse."""
        limit = self.sio.eio.max_http_buffer_size

        async def frames() -> Message:
            while True:
                if peer.condemned is not None:
                    too_big = peer.close_code == MESSAGE_TOO_BIG
                    metrics.dropped("oversize" if too_big else "malformed")
                    await peer.close_websocket()
                    return {"type": "websocket.disconnect", "code": peer.close_code}
                message = await receive()
                if message["type"] != "websocket.receive":
                    return message
                text = message.get("text")
                if text is None:
                    peer.refuse("binary", "a binary frame (no event carries binary data)")
                elif len(text) > limit:
                    peer.refuse("oversize", f"a message over {limit} characters", MESSAGE_TOO_BIG)
                elif (problem := _packet_problem(text)) is not None:
                    peer.refuse(*problem)
                else:
                    return message

        return frames

    def _opening(self, peer: Peer, send: Send) -> Send:
        """The websocket's send(), learning the Engine.IO session id from the OPEN packet."""

        async def opening(message: Message) -> None:
            if peer.eio_sid is None and message["type"] == "websocket.send":
                text = message.get("text") or ""
                if text.startswith("0{"):
                    peer.eio_sid = json.loads(text[1:]).get("sid")
                    if peer.eio_sid is not None:
                        self.websockets[peer.eio_sid] = peer
            await send(message)

        return opening


def _payload_problem(body: bytes, limit: int) -> tuple[str, str, int] | None:
    """Why a long-polling payload (packets joined by \\x1e) is refused, or None."""
    if len(body) > limit:
        return "oversize", f"a payload over {limit} bytes", MESSAGE_TOO_BIG
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "engineio", "a payload that is not UTF-8", POLICY_VIOLATION
    for packet in text.split("\x1e"):
        if packet[:1] == "b":  # base64: binary data
            return "binary", "a binary packet (no event carries binary data)", POLICY_VIOLATION
        problem = _packet_problem(packet)
        if problem is not None:
            return (*problem, POLICY_VIOLATION)
    return None


def _packet_problem(packet: str) -> tuple[str, str] | None:
    """Why one Engine.IO text packet from a client is refused (kind, reason), or None."""
    if packet[:1] not in _ENGINE_TYPES:
        return "engineio", f"Engine.IO packet type {packet[:1]!r} is unknown"
    if packet[0] == "4" and not packet[1:2].isdigit():
        return "socketio", "an Engine.IO message that is not a Socket.IO packet"
    return None


class ConnectionSweep:
    """Closes Engine.IO connections that joined no namespace within `timeout` seconds, or that
    stopped answering pings.

    A sweep every tenth of the timeout (at most every half ping timeout or `PING_CHECK_EVERY`
    seconds), not a timer per connection: a connection is closed between 1 and 1.2 timeouts
    after it was opened (or after it left its last namespace), and at most one sweep after a
    ping went unanswered for the Engine.IO ping timeout. (Websockets also end on their own when
    nothing arrives for ping interval + ping timeout; this catches long-polling clients that
    vanish.)
    """

    def __init__(
        self,
        sio: socketio.AsyncServer,
        timeout: float,
        close: Callable[[str, str], Awaitable[None]],
    ):
        self.sio = sio
        self.timeout = timeout
        self._close = close
        self.interval = min(timeout / 10, sio.eio.ping_timeout / 2, PING_CHECK_EVERY)
        self._unjoined_since: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="connection-sweep")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep(time.monotonic())
            except Exception:
                logger.exception("connection sweep failed", extra={"action": "guard_error"})

    async def sweep(self, now: float) -> None:
        """Close what has been without a namespace for the whole timeout, or is silent.

        Per connection only attribute reads and set operations: a coroutine call and a namespace
        look-up per connection cost ~0.4 % of a core at 10,000 connections (bench/RESULTS.md,
        "Ingest core on a slower machine"). python-engineio still decides each ping timeout.
        """
        engine, manager = self.sio.eio, self.sio.manager
        overdue = time.time() - engine.ping_timeout  # last_ping is wall-clock time
        closed: list[str] = []
        silent: list[Any] = []
        for eio_sid, socket in engine.sockets.items():
            if socket.closed:
                closed.append(eio_sid)
            elif socket.last_ping and socket.last_ping < overdue and not socket.closing:
                silent.append(socket)
        for eio_sid in closed:
            await engine.disconnect(eio_sid)  # only forgets it: it is closed already
        for socket in silent:
            await socket.check_ping_timeout()  # no pong within the ping timeout: closes it
        joined = {
            eio_sid
            for namespace in manager.get_namespaces()
            for _, eio_sid in manager.get_participants(namespace, None)
        }
        unjoined = engine.sockets.keys() - joined
        since = self._unjoined_since
        for gone in since.keys() - unjoined:
            del since[gone]
        stale = []
        for eio_sid in unjoined:
            if now - since.setdefault(eio_sid, now) >= self.timeout:
                stale.append(eio_sid)
        for eio_sid in stale:
            del since[eio_sid]
            metrics.dropped("connect_timeout")
            logger.debug("no Socket.IO connect", extra={"action": "connect_timeout"})
            try:
                # Bounded: one connection must never hold up the sweep (and the ping checks).
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self._close(eio_sid, "no Socket.IO connect within the connect timeout")
            except TimeoutError:
                logger.warning("closing %s timed out", eio_sid, extra={"action": "guard_error"})


class Host(Protocol):
    """What the guards need of the ingest app: its ASGI app to wrap, its server, its lifecycle."""

    asgi: Any
    settings: Settings

    @property
    def sio(self) -> socketio.AsyncServer: ...

    @property
    def on_start(self) -> list[Callable[[], Awaitable[None]]]: ...

    @property
    def on_close(self) -> list[Callable[[], Awaitable[None]]]: ...


def install(app: Host) -> None:
    """Put the transport guard in front of the app and run the connection sweep with it."""
    logging.getLogger("engineio.server").addFilter(_DROP_REFUSED)
    guard = app.asgi = TransportGuard(app.asgi, app.sio)
    sweep = ConnectionSweep(app.sio, app.settings.connect_timeout.total_seconds(), guard.close)
    app.on_start.append(sweep.start)
    app.on_close.append(sweep.close)
