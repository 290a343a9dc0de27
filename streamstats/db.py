"""Database access: asyncpg pools and connections, with driver errors turned into ours."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import numpy as np

from streamstats.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

# Errors that mean "the server is not there (right now)", as opposed to a bad query.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    TimeoutError,
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect(url: str, *, timeout: float = 10) -> asyncpg.Connection:
    """One connection, outside any pool (for migrations and session advisory locks)."""
    try:
        conn = await asyncpg.connect(url, timeout=timeout)
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from exc
    await _init_connection(conn)
    return conn


async def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 4, timeout: float = 10, **kwargs: Any
) -> asyncpg.Pool:
    """A connection pool with the project's type codecs."""
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            init=_init_connection,
            **kwargs,
        )
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from exc
    assert pool is not None
    return pool


@contextlib.asynccontextmanager
async def connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    """`async with connection(url) as conn:` — a dedicated connection, closed afterwards."""
    conn = await connect(url)
    try:
        yield conn
    finally:
        await conn.close()


# A binary COPY starts with an 11-byte signature, 4 bytes of flags and a 4-byte header
# extension length (0), and ends with a field count of -1.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)


async def fetch_floats(
    conn: asyncpg.Connection, query: str, *args: Any, columns: int
) -> np.ndarray:
    """The rows of `query` as a float64 matrix (rows × `columns`), read with a binary COPY.

    Every column of the query must be a non-NULL float8 (`coalesce(x, 'NaN')`): rows then have
    one fixed size and become an array in one step, where decoding them as records costs
    about as much as the query itself.
    """
    buffer = io.BytesIO()
    await conn.copy_from_query(query, *args, output=buffer, format="binary")
    data = buffer.getbuffer()
    if bytes(data[: len(_COPY_HEADER)]) != _COPY_HEADER:
        raise ValueError("not a binary COPY without header extension")
    row = np.dtype(
        [("fields", ">i2")]
        + [(f"{k}{i}", ">i4" if k == "n" else ">f8") for i in range(columns) for k in ("n", "v")]
    )
    count = (len(data) - len(_COPY_HEADER) - 2) // row.itemsize
    rows = np.frombuffer(data, row, count, offset=len(_COPY_HEADER))
    sizes = [rows["fields"] == columns] + [rows[f"n{i}"] == 8 for i in range(columns)]
    if bytes(data[-2:]) != b"\xff\xff" or not all(s.all() for s in sizes):
        raise ValueError(f"COPY rows are not {columns} non-NULL float8 columns")
    return np.column_stack([rows[f"v{i}"].astype(float) for i in range(columns)]).reshape(
        count, columns
    )
