"""Per-update cost of JSON and validation: the current code against the candidates, in one run.

What one `stream:stats:update` costs before its handler's database work, split in its parts:
- decode: the packet's JSON text `["stream:stats:update", {...}]` into Python objects
  (python-socketio calls the server's `json.loads`): stdlib `json` (the first line, the
  baseline) vs `WireJson` (orjson, the stdlib only for what orjson refuses);
- validate: the payload dict into the row to store, with named-field errors: the project's
  `parse_update` (pydantic `model_validate`), pydantic's `TypeAdapter` and `model_validate_json`
  (which would need the raw payload text, not what python-socketio hands a handler), `msgspec`
  (`convert` from the dict, `json.decode` from text), and plain hand-written checks;
- encode: the acknowledgement packet (stdlib `json.dumps` vs `WireJson.dumps`).

Each variant runs `--number` times per repeat; the median of `--repeat` repeats is printed in
µs per update, with its ratio to the first line of its part, measured in the same run.

    .venv/bin/python bench/bench_validation.py [--number 20000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import msgspec
import orjson
from pydantic import TypeAdapter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest.schema import Update, WireJson, parse_update
from tests.e2e.clients import guide_update

NOW = datetime.now(UTC)
RETENTION = timedelta(days=30)
# The client guide's update, as a streamer sends it.
PAYLOAD = guide_update()
PACKET = json.dumps(["stream:stats:update", PAYLOAD], separators=(",", ":"))
PAYLOAD_TEXT = json.dumps(PAYLOAD)
ACK = [
    {
        "ok": True,
        "streamId": PAYLOAD["streamId"],
        "timestamp": PAYLOAD["timestamp"],
        "quality": "good",
        "duplicate": False,
    }
]


# msgspec's version of ingest/schema.py's models (same bounds, unknown fields ignored).
class MResolution(msgspec.Struct, frozen=True):
    width: Annotated[int, msgspec.Meta(ge=0, le=16_384)] | None = None
    height: Annotated[int, msgspec.Meta(ge=0, le=16_384)] | None = None


class MBandwidth(msgspec.Struct, frozen=True):
    upload: Annotated[float, msgspec.Meta(ge=0, le=100_000_000)] | None = None
    download: Annotated[float, msgspec.Meta(ge=0, le=100_000_000)] | None = None


class MStats(msgspec.Struct, frozen=True):
    bitrate: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    fps: Annotated[float, msgspec.Meta(ge=0, le=1_000)] | None = None
    resolution: MResolution | None = None
    audioLevel: Annotated[float, msgspec.Meta(ge=-200, le=20)] | None = None
    packetLoss: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None
    latency: Annotated[float, msgspec.Meta(ge=0, le=600_000)] | None = None
    bandwidth: MBandwidth | None = None


class MUpdate(msgspec.Struct, frozen=True):
    streamId: str
    stats: MStats
    timestamp: Annotated[str, msgspec.Meta(max_length=64)] | None = None


_ADAPTER = TypeAdapter(Update)
_MDECODER = msgspec.json.Decoder(MUpdate)
_RANGES = {
    "bitrate": (0, 1_000_000),
    "fps": (0, 1_000),
    "audioLevel": (-200, 20),
    "packetLoss": (0, 100),
    "latency": (0, 600_000),
}


def _plain(data: Any) -> tuple[Any, ...]:
    """Hand-written checks of the same rules (raising ValueError naming the field)."""
    if not isinstance(data, dict):
        raise ValueError("payload")
    stream, stats = data.get("streamId"), data.get("stats")
    if not isinstance(stream, str):
        raise ValueError("streamId")
    if not isinstance(stats, dict):
        raise ValueError("stats")
    values = []
    for name, (low, high) in _RANGES.items():
        value = stats.get(name)
        if value is not None and (type(value) not in (int, float) or not low <= value <= high):
            raise ValueError(f"stats.{name}")
        values.append(value)
    for name, keys, high, kind in (
        ("resolution", ("width", "height"), 16_384, int),
        ("bandwidth", ("upload", "download"), 100_000_000, float),
    ):
        inner = stats.get(name)
        if inner is None:
            values.extend((None, None))
            continue
        if not isinstance(inner, dict):
            raise ValueError(f"stats.{name}")
        for key in keys:
            value = inner.get(key)
            allowed = (int,) if kind is int else (int, float)
            if value is not None and (type(value) not in allowed or not 0 <= value <= high):
                raise ValueError(f"stats.{name}.{key}")
            values.append(value)
    return tuple(values)


def variants() -> dict[str, dict[str, Callable[[], Any]]]:
    wire = WireJson(16 * 1024)
    data = json.loads(PACKET)[1]
    return {
        "decode": {
            "stdlib json.loads (WireJson before orjson)": lambda: json.loads(PACKET),
            "WireJson.loads (orjson, stdlib fallback)": lambda: wire.loads(PACKET),
            "orjson.loads alone": lambda: orjson.loads(PACKET),
        },
        "validate": {
            "current: parse_update (pydantic model_validate)": lambda: parse_update(
                data, now=NOW, retention=RETENTION
            ),
            "pydantic model_validate only": lambda: Update.model_validate(data),
            "pydantic TypeAdapter.validate_python": lambda: _ADAPTER.validate_python(data),
            "pydantic model_validate_json (from text)": lambda: Update.model_validate_json(
                PAYLOAD_TEXT
            ),
            "msgspec.convert (from the dict)": lambda: msgspec.convert(data, MUpdate),
            "msgspec.json.decode (from text)": lambda: _MDECODER.decode(PAYLOAD_TEXT),
            "plain checks": lambda: _plain(data),
        },
        "encode": {
            "stdlib json.dumps (WireJson before orjson)": lambda: json.dumps(
                ACK, separators=(",", ":")
            ),
            "WireJson.dumps (orjson)": lambda: WireJson.dumps(ACK, separators=(",", ":")),
        },
    }


def measure(run: Callable[[], Any], number: int, repeat: int) -> float:
    """Median µs per call over `repeat` timings of `number` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            run()
        times.append((time.perf_counter() - started) / number * 1e6)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    for part, runs in variants().items():
        baseline = None
        print(f"{part}:")
        for name, run in runs.items():
            run()  # warm
            us = measure(run, args.number, args.repeat)
            baseline = baseline or us
            print(f"  {name:<50} {us:8.2f} µs  {us / baseline:5.2f}x")


if __name__ == "__main__":
    main()
