"""Where the SQL lives: migrations and named queries, from a checkout or an installed wheel."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path

_HEADER = re.compile(r"^--\s*(?P<name>[a-z0-9_]+)\s*--\s*$", re.MULTILINE)


@cache
def sql_root() -> Path:
    """The `sql/` directory: packaged inside `streamstats` in a wheel, at the top of a checkout."""
    packaged = Path(str(resources.files("streamstats"))) / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


def parse_queries(text: str) -> dict[str, str]:
    """Split `-- name --` sections into {name: sql}; the line after a header describes it."""
    queries: dict[str, str] = {}
    headers = list(_HEADER.finditer(text))
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        body = text[header.end() : following.start() if following else len(text)].strip()
        name = header["name"]
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body
    return queries


@cache
def load_queries() -> dict[str, str]:
    """Every named query in `sql/queries/*.sql` (one file per area); names are unique overall."""
    queries: dict[str, str] = {}
    for path in sorted((sql_root() / "queries").glob("*.sql")):
        for name, body in parse_queries(path.read_text()).items():
            if name in queries:
                raise ValueError(f"query {name!r} in {path.name} is defined twice")
            queries[name] = body
    return queries


class _Queries:
    """`queries["name"]`, loaded on first use."""

    def __getitem__(self, name: str) -> str:
        return load_queries()[name]

    def __contains__(self, name: object) -> bool:
        return name in load_queries()


queries = _Queries()
