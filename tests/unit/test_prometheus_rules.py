"""deploy/prometheus/alerts.yml: valid for promtool, its unit tests pass, its metrics exist."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import ingest.metrics  # noqa: F401  (registers the metrics)

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: scripts/setup.sh installs it (Debian's prometheus)")
    done = subprocess.run(
        [tool, *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_alert_rules_pass_promtool_check():
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml")


def test_the_alert_rules_pass_their_unit_tests():
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_every_metric_the_rules_use_is_exported():
    exported = set()
    for family in REGISTRY.collect():
        for sample in family.samples:
            exported.add(sample.name)
        # A labelled family without children yet has no samples: its names, by type.
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        exported.update(family.name + s for s in suffixes.get(family.type, [""]))
    used = set(re.findall(r"\bstreamstats_[a-z0-9_]+", (RULES / "alerts.yml").read_text()))
    assert used, "no metric found in the rules"
    assert used <= exported, used - exported
