"""Errors a client is told about, each with its docs/protocol.md code."""

from __future__ import annotations

from typing import Any, ClassVar

from streamstats.errors import StreamStatsError


class ClientError(StreamStatsError):
    """The request failed."""

    code: ClassVar[str] = "error"

    def __init__(self, message: str | None = None, *, field: str | None = None):
        super().__init__(message)
        self.field = field

    def payload(self) -> dict[str, Any]:
        """`{code, message, field?}` as sent to the client."""
        body: dict[str, Any] = {"code": self.code, "message": str(self)}
        if self.field is not None:
            body["field"] = self.field
        return body


class Unauthorized(ClientError):
    """A valid token is required."""

    code = "unauthorized"


class Forbidden(ClientError):
    """This role may not do that on this stream."""

    code = "forbidden"


class Invalid(ClientError):
    """The payload is invalid."""

    code = "invalid"


class TooLarge(ClientError):
    """The event is larger than 16 KiB."""

    code = "too_large"


class RateLimited(ClientError):
    """Too many events on this connection; slow down."""

    code = "rate_limited"


class Overloaded(ClientError):
    """The write queue is full; nothing was stored, retry later."""

    code = "overloaded"


class Unavailable(ClientError):
    """The database is unreachable; nothing was stored, retry later."""

    code = "unavailable"
