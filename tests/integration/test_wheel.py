"""The built wheel carries its SQL and migrates a database without the checkout."""

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_an_installed_wheel_migrates_an_empty_database(tmp_path, empty_database):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = dist.glob("stream_stats-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    site = next(env_dir.glob("lib/python*/site-packages"))
    # Third-party dependencies come from the test environment (no network needed); the project
    # itself only from the wheel: a plain path entry does not run the checkout's editable hook.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), wheel],
        check=True,
        capture_output=True,
        timeout=120,
    )
    python = env_dir / "bin" / "python"
    where = subprocess.run(
        [python, "-c", "import streamstats.sql as s; print(s.sql_root())"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(site)), where

    env = {"DATABASE_URL": empty_database, "PATH": "/usr/bin:/bin"}
    first = subprocess.run(
        [python, "-m", "streamstats.cli", "migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr
    shipped = sorted(p.stem for p in (ROOT / "sql" / "migrations").glob("*.sql"))
    assert [line.split()[1] for line in first.stdout.splitlines()] == shipped
