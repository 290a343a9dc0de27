"""`streamstats export`: the rollups of a time range as CSV or Parquet, for pandas or a warehouse.

Rows are read through a server-side cursor a chunk at a time and appended to the file (a
Parquet row group per chunk), so memory stays flat however long the range is. The columns are
the view's own (docs/analysts.md), typed from the database: timestamps in UTC, stream ids as
text, NULL as an empty CSV field or a Parquet null. The file appears only when complete.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import asyncpg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from streamstats.db import create_pool
from streamstats.errors import StreamStatsError
from streamstats.settings import Settings
from streamstats.sql import queries

Granularity = Literal["1m", "1h", "1d"]
Format = Literal["csv", "parquet"]
CHUNK_ROWS = 20_000
# Column types of the views, as Arrow types (ids as text, which every warehouse reads).
ARROW_TYPES = {
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "uuid": pa.string(),
    "text": pa.string(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float8": pa.float64(),
}


@dataclass(frozen=True)
class ExportRequest:
    """What to export: [start, end) of one rollup granularity, all streams or some."""

    start: datetime
    end: datetime
    granularity: Granularity
    format: Format
    output: Path
    streams: Sequence[uuid.UUID] = ()

    def __post_init__(self) -> None:
        if self.start >= self.end:
            raise StreamStatsError(
                f"--from ({self.start.isoformat()}) must be before --to ({self.end.isoformat()})"
            )


def parse_moment(text: str) -> datetime:
    """`2026-03-02` (midnight UTC) or an ISO 8601 date and time (UTC unless it says otherwise)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a date or ISO 8601 time: {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def default_output(granularity: str, start: datetime, end: datetime, fmt: str) -> Path:
    def name(moment: datetime) -> str:
        moment = moment.astimezone(UTC)
        if moment == datetime.combine(moment.date(), datetime.min.time(), UTC):
            return moment.date().isoformat()
        return moment.strftime("%Y-%m-%dT%H%M%SZ")

    return Path(f"stream_stats_{granularity}_{name(start)}_{name(end)}.{fmt}")


def arrow_schema(attributes: Sequence[Any]) -> pa.Schema:
    """The Arrow schema of a prepared statement's result columns."""
    try:
        return pa.schema([(a.name, ARROW_TYPES[a.type.name]) for a in attributes])
    except KeyError as exc:
        raise StreamStatsError(f"no export type for the column type {exc}") from None


def frame(rows: Sequence[asyncpg.Record], schema: pa.Schema) -> pd.DataFrame:
    """A chunk of rows as a DataFrame of the schema's columns (stream ids as text)."""
    df = pd.DataFrame.from_records([tuple(r) for r in rows], columns=schema.names)
    for field in schema:
        if field.type == pa.string():
            df[field.name] = df[field.name].map(lambda v: None if v is None else str(v))
    return df


class _CsvFile:
    def __init__(self, path: Path, schema: pa.Schema):
        self.file = path.open("w", newline="", encoding="utf-8")
        self.schema = schema
        self.empty = True

    def write(self, chunk: pd.DataFrame) -> None:
        chunk.to_csv(self.file, header=self.empty, index=False)
        self.empty = False

    def close(self) -> None:
        if self.empty:
            self.file.write(",".join(self.schema.names) + "\n")
        self.file.close()


class _ParquetFile:
    def __init__(self, path: Path, schema: pa.Schema):
        self.writer = pq.ParquetWriter(path, schema)
        self.schema = schema

    def write(self, chunk: pd.DataFrame) -> None:
        # One row group per chunk.
        self.writer.write_table(
            pa.Table.from_pandas(chunk, schema=self.schema, preserve_index=False)
        )

    def close(self) -> None:
        self.writer.close()


async def export(settings: Settings, request: ExportRequest, *, progress: bool = True) -> int:
    """Write the file; returns the number of rows. A failure leaves no file behind."""
    partial = request.output.with_name(f".{request.output.name}.partial")
    days = round((request.end - request.start) / timedelta(days=1), 3)
    bar = tqdm(total=days, unit="day", desc=f"export {request.granularity}", disable=not progress)
    pool = await create_pool(settings.database_url, max_size=1)
    written = 0
    try:
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            statement = await conn.prepare(queries[f"export_{request.granularity}"])
            schema = arrow_schema(statement.get_attributes())
            cursor = await statement.cursor(request.start, request.end, request.streams or None)
            out = (_ParquetFile if request.format == "parquet" else _CsvFile)(partial, schema)
            try:
                while rows := await cursor.fetch(CHUNK_ROWS):
                    out.write(frame(rows, schema))
                    written += len(rows)
                    # Rows come in time order: the last one says how far the export is.
                    done = (rows[-1]["bucket"] - request.start) / timedelta(days=1)
                    bar.update(round(done, 3) - bar.n)
                    bar.set_postfix(rows=f"{written:,}")
            finally:
                out.close()
        bar.update(days - bar.n)
        partial.replace(request.output)
    finally:
        bar.close()
        partial.unlink(missing_ok=True)
        await pool.close()
    return written
