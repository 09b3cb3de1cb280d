"""`make bench` in smoke mode: it runs and produces its table and its JSON. A benchmark is not
a test: nothing here looks at a timing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import run_module

pytestmark = pytest.mark.e2e

FIGURES = {"p50_ms", "p99_ms", "rps", "errors", "concurrency"}


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (make bench installs it)"
)
def test_bench_smoke_prints_the_table_and_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    env = {
        **os.environ,
        "BENCH_SECONDS": "1",
        "BENCH_SMOKE": "1",
        "BENCH_JSON": str(out),
    }
    done = run_module("bench.run", env=env, timeout=100)
    assert done.returncode == 0, done.stdout + done.stderr
    header = next(line for line in done.stdout.splitlines() if line.startswith("case"))
    for column in ("floor p50", "c1 p50", "c1 p99", "c16 rps", "c16 p99", "RSS MB", "PSS MB"):
        assert column in header
    assert "peer not measured: BENCH_SMOKE=1" in done.stdout
    report = json.loads(out.read_text())
    cases = {case["case"]: case for case in report["cases"]}
    assert set(cases) == {"iris-svc (2 workers)", "ours /predict", "ours V1"}
    for name, case in cases.items():
        assert name in done.stdout
        assert set(case["c1"]) >= FIGURES
        assert set(case["c16"]) >= FIGURES
        assert case["rps"] > 0
        assert case["c1_p50_over_floor"] > 0
        assert case["rss_mb"] > 0
        assert case["pss_mb"] > 0
    assert report["smoke"] is True
    assert report["peer"]["skipped"] == "BENCH_SMOKE=1"
