"""Who a connection is: HS256 JWTs checked at connect, and what each role may do."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import jwt

from ingest.errors import Unauthorized
from streamstats.errors import StreamStatsError

Role = Literal["streamer", "viewer", "moderator", "analyst", "admin"]
Action = Literal["update", "get", "monitor", "watch", "beacon", "alerts"]

ROLES: tuple[Role, ...] = ("streamer", "viewer", "moderator", "analyst", "admin")
# Roles that receive broadcasts and may subscribe; without a `streams` claim they see every stream.
MONITORS = frozenset({"moderator", "analyst", "admin"})
# Roles whose tokens must name their streams.
SCOPED = frozenset({"streamer", "viewer"})
ALGORITHM = "HS256"
# Real tokens are a few hundred bytes; a bigger one is refused before its signature is checked.
MAX_TOKEN_CHARS = 8192
# The one spelling docs/protocol.md names: 8-4-4-4-12 hex digits, either case. Not braces,
# `urn:uuid:`, bare hex or hyphens elsewhere, which `uuid.UUID()` would also take.
_CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)

# The table "What each role may do" of docs/protocol.md; a role may act only within its streams.
_ALLOWED: dict[Action, frozenset[str]] = {
    "update": frozenset({"streamer", "admin"}),
    "get": frozenset({"streamer", "moderator", "analyst", "admin"}),
    "monitor": MONITORS,
    "watch": frozenset({"viewer"}),
    "beacon": frozenset({"viewer"}),
    "alerts": frozenset({"streamer"}) | MONITORS,
}


@dataclass(frozen=True)
class Principal:
    """The verified claims of a connection's token."""

    sub: str
    role: Role
    # Canonical lowercase UUID strings; None means every stream (monitor roles only).
    streams: frozenset[str] | None
    expires_at: float

    @property
    def is_monitor(self) -> bool:
        return self.role in MONITORS

    def expired(self, now: float | None = None) -> bool:
        """Whether the token's `exp` has passed (checked per event, not only at connect)."""
        return (time.time() if now is None else now) >= self.expires_at

    def sees(self, stream_id: str) -> bool:
        """Whether the token's stream scope includes this stream."""
        return self.streams is None or stream_id in self.streams

    def can(self, action: Action) -> bool:
        """Whether this role may do `action` at all (on some stream)."""
        return self.role in _ALLOWED[action]

    def may(self, action: Action, stream_id: str) -> bool:
        """Whether this role may do `action` on the stream (canonical UUID string)."""
        return self.role in _ALLOWED[action] and self.sees(stream_id)


def parse_stream_id(value: Any) -> uuid.UUID | None:
    """The UUID of a canonically spelled stream id string (any case), or None."""
    if not isinstance(value, str) or _CANONICAL_UUID.fullmatch(value) is None:
        return None
    return uuid.UUID(value)


def canonical_stream_id(value: Any) -> str | None:
    """The canonical form of a stream UUID string, or None if it is not one."""
    stream = parse_stream_id(value)
    return None if stream is None else str(stream)


def decode_token(token: Any, secret: str, *, clock_skew: float = 0.0) -> Principal:
    """Verify a JWT and return its principal; raise Unauthorized saying what is wrong.

    `clock_skew` (seconds): how far in the future the issuer's clock may put `iat` and `nbf`.
    `exp` gets no such grace: a token is expired the moment its `exp` passes here.
    """
    if not isinstance(token, str) or not token:
        raise Unauthorized("a token is required: connect with auth: { token }")
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized(
            f"the token is {len(token)} characters; at most {MAX_TOKEN_CHARS} are accepted"
        )
    try:
        # Pinning the algorithm list refuses `alg: none` and any asymmetric-key confusion.
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "role", "exp"]},
            leeway=clock_skew,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token has expired") from None
    except jwt.ImmatureSignatureError as exc:
        raise Unauthorized(
            f"the token is not valid yet ({exc}): its issuer's clock is more than "
            f"{clock_skew:g}s ahead"
        ) from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("the token's signature is invalid") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthorized(f"the token has no {exc.claim!r} claim") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"the token is invalid: {exc}") from None
    if float(claims["exp"]) <= time.time():
        raise Unauthorized("the token has expired")  # within the leeway PyJWT applied to it
    return _principal(claims)


def _principal(claims: dict[str, Any]) -> Principal:
    sub, role, streams = claims.get("sub"), claims.get("role"), claims.get("streams")
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("the token's 'sub' claim must be a non-empty string")
    if role not in ROLES:
        raise Unauthorized(f"the token's 'role' must be one of {', '.join(ROLES)}")
    if streams is None:
        if role in SCOPED:
            raise Unauthorized(f"a {role} token must name its streams in a 'streams' claim")
        scope = None
    else:
        if not isinstance(streams, list):
            raise Unauthorized("the token's 'streams' claim must be a list of stream UUIDs")
        ids = [canonical_stream_id(item) for item in streams]
        if any(item is None for item in ids):
            raise Unauthorized("the token's 'streams' claim must hold stream UUIDs only")
        scope = frozenset(item for item in ids if item is not None)
    return Principal(sub=sub, role=role, streams=scope, expires_at=float(claims["exp"]))


def mint_token(
    secret: str,
    *,
    role: str,
    streams: Iterable[str] | None = None,
    sub: str | None = None,
    ttl: float | timedelta = 3600,
) -> str:
    """A signed token for a client; monitors without streams may see every stream."""
    if role not in ROLES:
        raise StreamStatsError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    ids = list(streams or [])
    for item in ids:
        if canonical_stream_id(item) is None:
            raise StreamStatsError(f"not a stream UUID: {item!r}")
    if role in SCOPED and not ids:
        raise StreamStatsError(f"a {role} token needs at least one stream (--stream ID)")
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub or role, "role": role, "iat": now}
    claims["exp"] = now + int(seconds)
    if ids:
        claims["streams"] = [item.lower() for item in ids]
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
