"""Who receives what: the room names and the broadcast rules, in one place.

Rooms (python-socketio rooms, per node):
- `streamer:<streamId>`: the connections of streamers whose token names the stream;
- `monitor:<streamId>`: monitors (moderator/analyst/admin) whose token is limited to the stream
  and who are subscribed to it;
- `monitors:all`: monitors without a `streams` claim; one who unsubscribes from a stream also
  enters `unsubscribed:<streamId>`, and is left out of that stream's broadcasts;
- `viewer:<streamId>`: viewers who joined the stream (they never receive monitor traffic);
- `digests`: monitors subscribed to `stream:stats:digest` (ingest/digest.py), which then take
  per-sample `stream:stats:update` broadcasts only of the streams they subscribe to afterwards
  (`wanted:<streamId>`, entered by every `stream:stats:subscribe`); alerts reach them as before.

A broadcast is one emit of a list of payloads, each with its `streamId`, to an audience
(`MONITORS`, or `EVERYONE` = monitors and the stream's streamers). The audience is resolved by
`StreamRooms.emit` on every node for its own clients — with the Redis manager the emit is
published once and each node resolves it — so each client gets each payload once, and an
unsubscription is honoured by the node that holds the connection. Each payload is encoded once
and sent straight to its recipients' Engine.IO sockets, without a task per recipient.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet

from ingest.auth import Principal

ALL_MONITORS = "monitors:all"
# Audiences: names a broadcast is emitted to; never rooms anyone is in.
MONITORS = "audience:monitors"
EVERYONE = "audience:monitors+streamers"
_AUDIENCES = (MONITORS, EVERYONE)


def streamer_room(stream_id: str) -> str:
    return f"streamer:{stream_id}"


def monitor_room(stream_id: str) -> str:
    return f"monitor:{stream_id}"


def _monitor_rooms(stream_id: str) -> list[str]:
    """The rooms whose monitors may receive the stream's broadcasts (before unsubscriptions)."""
    return [monitor_room(stream_id), ALL_MONITORS]


def unsubscribed_room(stream_id: str) -> str:
    return f"unsubscribed:{stream_id}"


DIGESTS = "digests"


def wanted_room(stream_id: str) -> str:
    return f"wanted:{stream_id}"


def viewer_room(stream_id: str) -> str:
    return f"viewer:{stream_id}"


def rooms_at_connect(principal: Principal) -> list[str]:
    """The rooms a connection enters once its token is accepted."""
    if principal.role == "streamer":
        return [streamer_room(s) for s in principal.streams or ()]
    if principal.is_monitor:
        if principal.streams is None:
            return [ALL_MONITORS]
        return [monitor_room(s) for s in principal.streams]
    return []


async def subscribe(
    sio: socketio.AsyncServer, sid: str, principal: Principal, stream_id: str, on: bool
) -> None:
    """(Un)subscribe a monitor to a stream's broadcasts (the token allows the stream)."""
    # Asked for by name: what a digest subscriber still receives per sample.
    if on:
        await sio.enter_room(sid, wanted_room(stream_id))
    else:
        await sio.leave_room(sid, wanted_room(stream_id))
    if principal.streams is None:
        if on:
            await sio.leave_room(sid, unsubscribed_room(stream_id))
        else:
            await sio.enter_room(sid, unsubscribed_room(stream_id))
    elif on:
        await sio.enter_room(sid, monitor_room(stream_id))
    else:
        await sio.leave_room(sid, monitor_room(stream_id))


async def broadcast(
    sio: socketio.AsyncServer,
    event: str,
    payloads: list[dict[str, Any]],
    *,
    streamers: bool,
    local: bool = False,
) -> None:
    """Send each payload to the monitors allowed to see its `streamId` (and its streamers).

    `local`: only to this node's clients, even with the Redis manager (which would otherwise
    publish to every node): for events every node receives on its own, like job alerts.
    """
    if payloads:
        await sio.emit(event, payloads, to=EVERYONE if streamers else MONITORS, ignore_queue=local)


async def digest_only(sio: socketio.AsyncServer, sid: str, on: bool) -> None:
    """A digest subscriber leaves per-sample broadcasts, but for the streams it subscribes to."""
    if on:
        await sio.enter_room(sid, DIGESTS)
    else:
        await sio.leave_room(sid, DIGESTS)


class StreamRooms(socketio.AsyncManager):
    """The client manager of one node: resolves audiences and sends without a task per client.

    Also the base of `RedisStreamRooms`, below the pub/sub layer: there python-socketio's
    manager calls this `emit` for the local delivery of every message, its own and other nodes'.
    """

    def may_reach(self, stream_id: str) -> bool:
        """Whether a monitor could receive the stream's broadcast (skips building it if not).

        The rooms alone, without the unsubscriptions and digests `_audience` honours: a cheap
        upper bound, looked up for every stream of every batch.
        """
        return next(self.get_participants("/", _monitor_rooms(stream_id)), None) is not None

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        room = to or room
        if callback is not None:
            # Acknowledged emits need an id per recipient: the library's own path.
            await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback
            )
            return
        if room in _AUDIENCES:
            # Resolved once per stream and emit: a batch often holds several samples of one.
            audiences: dict[str, list[tuple[str, Any]]] = {}
            for payload in data:
                stream_id = str(payload["streamId"])
                if stream_id not in audiences:
                    audiences[stream_id] = list(
                        self._audience(namespace, stream_id, room == EVERYONE)
                    )
                await self._send(namespace, [event, payload], audiences[stream_id])
            return
        # Everything else as python-socketio's manager would, minus the task per recipient.
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        skip = set(skip_sid if isinstance(skip_sid, list) else [skip_sid])
        recipients = [(s, e) for s, e in self.get_participants(namespace, room) if s not in skip]
        await self._send(namespace, [event, *args], recipients)

    def _audience(
        self, namespace: str, stream_id: str, streamers: bool
    ) -> Iterator[tuple[str, Any]]:
        rooms = _monitor_rooms(stream_id)
        if streamers:
            rooms.append(streamer_room(stream_id))
        # get_participants merges the rooms: a client in several gets the payload once.
        excluded = {
            sid for sid, _ in self.get_participants(namespace, unsubscribed_room(stream_id))
        }
        if not streamers:  # per-sample broadcasts, not alerts
            wanted = {sid for sid, _ in self.get_participants(namespace, wanted_room(stream_id))}
            excluded.update(
                sid for sid, _ in self.get_participants(namespace, DIGESTS) if sid not in wanted
            )
        for sid, eio_sid in self.get_participants(namespace, rooms):
            if sid not in excluded:
                yield sid, eio_sid

    async def _send(
        self, namespace: str, data: list[Any], recipients: Iterable[tuple[str, Any]]
    ) -> None:
        encoded: eio_packet.Packet | None = None
        for _sid, eio_sid in recipients:
            if encoded is None:  # encoded once, for the first recipient
                pkt = self.server.packet_class(packet.EVENT, namespace=namespace, data=data)
                encoded = eio_packet.Packet(eio_packet.MESSAGE, pkt.encode())
            # Queues the packet on the socket (its writer task sends it); no task of ours.
            await self.server.eio.send_packet(eio_sid, encoded)


class RedisStreamRooms(socketio.AsyncRedisManager, StreamRooms):
    """`StreamRooms` across nodes: python-socketio's Redis manager publishes, each node resolves.

    In the method order StreamRooms comes right after the pub/sub layer, so every delivery the
    Redis manager makes on this node (of its own emits and of other nodes') goes through
    `StreamRooms.emit`.
    """

    def may_reach(self, stream_id: str) -> bool:
        return True  # monitors on other nodes are not known here
