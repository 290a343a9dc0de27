"""Report page building blocks: bands, weeks, minute batches, and data that cannot break a page."""

from __future__ import annotations

import json
import re
from datetime import date

import numpy as np
import pytest

from analytics import pages, report, weekly


@pytest.mark.parametrize(
    ("good", "fair", "poor", "band"),
    [
        (0.95, 0.05, 0.0, "good"),
        (0.91, 0.0, 0.09, "good"),
        (0.85, 0.10, 0.05, "fair"),
        (0.90, 0.0, 0.10, "poor"),
        (None, None, None, None),
    ],
)
def test_a_day_is_called_by_its_worst_band_covering_a_tenth_of_it(good, fair, poor, band):
    assert pages.band_of({"good": good, "fair": fair, "poor": poor}) == band


def test_iso_weeks_round_trip_and_bad_names_are_refused():
    assert weekly.week_start("2026-W10") == date(2026, 3, 2)
    assert weekly.week_name(date(2026, 3, 8)) == "2026-W10"
    assert weekly.week_name(date(2027, 1, 1)) == "2026-W53"
    for bad in ("2026-10", "2026-W54", "W10", "2026-Wx"):
        with pytest.raises(ValueError, match="not an ISO week"):
            weekly.week_start(bad)


def test_a_batch_of_minutes_splits_by_stream_position_including_streams_without_rows():
    width = report.MINUTES_WIDTH
    rows = [[1, 60.0] + [1.0] * (width - 2), [1, 120.0] + [2.0] * (width - 2)]
    rows.append([3, 60.0] + [3.0] * (width - 2))
    first, second, third = report.split_minutes(np.array(rows), 3)
    assert first["t"].tolist() == [60.0, 120.0] and first["samples"].tolist() == [1.0, 2.0]
    assert len(second["t"]) == 0
    assert third["poor_samples"].tolist() == [3.0]


def test_data_inside_a_page_cannot_close_its_script_element():
    section = pages.Section(
        "x",
        "X",
        pages.chart_slot("c", "c"),
        {"c": pages.chart([0, 60], [{"label": "</script><b>", "values": [1, 2]}], [])},
    )
    text = pages.page(
        "t", nav="", heading="h", subtitle="s", sections=[section],
        time_range={"live": [0, 60], "all": [0, 60]},
    )  # fmt: skip
    data = re.search(r'id="report-data">(.*?)</script>', text, re.S)
    assert data is not None
    assert json.loads(data.group(1))["charts"]["c"]["series"][0]["label"] == "</script><b>"


def test_a_sparkline_breaks_at_missing_slots_and_marks_poor_ones():
    svg = pages.sparkline([1.0, 2.0, None, 3.0, 4.0], [0.0, 0.5, None, 0.0, 0.0])
    assert svg.count("<polyline") == 2
    assert svg.count("<rect") == 1
    assert pages.sparkline([None, None]) == "–"
