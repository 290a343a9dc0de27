"""LOG_FORMAT=json: one JSON object a line, with the `extra=` fields operators filter on."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from streamstats import logs


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Put the root logger back as it was: `configure` replaces its handlers."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_format_writes_one_object_per_line_with_extra_fields(root_logging, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    logs.configure("json", "INFO")
    log = logging.getLogger("ingest.writer")
    log.info("flushed %d rows", 12, extra={"action": "flush", "rows": 12})
    log.warning("second line\nwith a newline", extra={"action": "x"})
    first, second = json_lines(stream)
    assert first["message"] == "flushed 12 rows"
    assert first["level"] == "info"
    assert first["logger"] == "ingest.writer"
    assert first["action"] == "flush"
    assert first["rows"] == 12
    assert first["time"].endswith("+00:00")
    assert second["message"] == "second line\nwith a newline"


def test_json_format_carries_the_traceback(root_logging, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    logs.configure("json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("jobs").exception("job failed", extra={"action": "job_failed"})
    (entry,) = json_lines(stream)
    assert entry["level"] == "error"
    assert "RuntimeError: boom" in entry["exception"]


def test_values_json_cannot_encode_are_written_as_text(root_logging, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    logs.configure("json")
    logging.getLogger("x").info("at", extra={"path": __import__("pathlib").Path("/tmp/r")})
    (entry,) = json_lines(stream)
    assert entry["path"] == "/tmp/r"


def test_debug_is_filtered_at_info_level(root_logging, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    logs.configure("json", "INFO")
    logging.getLogger("x").debug("hidden")
    assert stream.getvalue() == ""


def test_text_format_is_not_json(root_logging, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    logs.configure("text")
    logging.getLogger("ingest.app").info("listening")
    line = stream.getvalue().strip()
    assert "INFO" in line and "ingest.app: listening" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
