import pytest

from streamstats.migrations import discover
from streamstats.sql import load_queries, parse_queries


def test_named_queries_are_split_on_their_headers():
    text = "-- one --\n-- first\nSELECT 1\n\n-- two --\n-- second\nSELECT 2;\n"
    assert parse_queries(text) == {"one": "-- first\nSELECT 1", "two": "-- second\nSELECT 2;"}


def test_a_query_name_used_twice_is_refused():
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- a --\nSELECT 1\n-- a --\nSELECT 2\n")


def test_every_shipped_query_has_a_description_line():
    for name, body in load_queries().items():
        assert body.startswith("-- "), f"query {name} has no one-line description"


def test_shipped_migrations_are_numbered_in_order_from_one():
    # Numbers are reserved per area ahead of time, so a gap may exist until its migration lands.
    versions = [m.version for m in discover()]
    assert versions[0] == 1 and versions == sorted(set(versions))
