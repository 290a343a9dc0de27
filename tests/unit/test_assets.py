"""The browser libraries in streamstats/static/vendor are the ones web/package-lock.json pins."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "streamstats" / "static" / "vendor"
MODULES = ROOT / "web" / "node_modules"
BUILD = (ROOT / "scripts" / "build-assets.sh").read_text()
# "package/path/in/node_modules:name-in-vendor" pairs, as the build script lists them.
PAIRS = re.findall(r'"([^":]+):([^"]+)"', BUILD.split("files=(", 1)[1].split(")", 1)[0])


def test_build_script_lists_every_vendored_file() -> None:
    assert sorted(name for _, name in PAIRS) == sorted(p.name for p in VENDOR.iterdir())


@pytest.mark.parametrize(("source", "name"), PAIRS)
def test_vendored_file_matches_the_locked_package(source: str, name: str) -> None:
    if not MODULES.is_dir():
        pytest.fail("web/node_modules is missing: run scripts/setup.sh (it runs npm ci in web/)")
    package = source.split("/", 1)[0]
    lock = json.loads((ROOT / "web" / "package-lock.json").read_text())
    installed = json.loads((MODULES / package / "package.json").read_text())
    assert installed["version"] == lock["packages"][f"node_modules/{package}"]["version"]
    assert (VENDOR / name).read_bytes() == (MODULES / source).read_bytes(), (
        f"{name} differs from web/node_modules/{source}: run scripts/build-assets.sh"
    )
