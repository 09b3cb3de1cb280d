"""Load from a second process: wrk on loopback, bounded in time, parsed from its JSON line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("wrk.lua")


@dataclass(frozen=True)
class Load:
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0


def wrk(url: str, concurrency: int, seconds: float, body: Path | None = None) -> Load:
    """Run wrk with one thread per 8 connections (at most 2: the machine has 2 cores)."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: `apt-get install wrk` (make bench does)")
    threads = max(1, min(2, concurrency // 8))
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "-s",
            str(SCRIPT),
            url,
        ],
        env={**os.environ, "BENCH_BODY": str(body or "")},
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    summary = json.loads(out.split("BENCH ", 1)[1].splitlines()[0])
    return Load(
        concurrency=concurrency,
        rps=summary["requests"] / (summary["duration_us"] / 1e6),
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        errors=summary["errors"] + summary["non2xx"],
        requests=summary["requests"],
    )
