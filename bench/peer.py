"""`make bench`'s peer comparison: the project's predictor beside KServe's Python model server,
both serving build/models/iris-svc.onnx with the same number of worker processes, measured
interleaved in one run so machine drift shows in both.

The peer lives in its own virtual environment, ``.venv-peer``, made here when missing (pinned
in ``PEER_PINS``); if it cannot be made the comparison says so and the bench goes on. It runs
``bench/kserve_iris.py`` with KServe's defaults (access log and latency log on), beside a
second KServe with its request logs off, for scale. Each round runs every target at c1 then
c16 for BENCH_SECONDS; rounds alternate their order (A B C, C B A, ...) and each row reports
the median over rounds and the peak memory of its process tree sampled during its loads.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.load import Load, wrk
from bench.procs import measured_cpu, memory_mb, running
from emulators.processes import free_port

REPO = Path(__file__).resolve().parents[1]
PEER_VENV = REPO / ".venv-peer"
PEER_PINS = ("kserve==0.21.0", "onnxruntime==1.31.1", "numpy==2.4.6")
MODEL_FILE = REPO / "build" / "models" / "iris-svc.onnx"
IRIS_ROW = [[5.1, 3.5, 1.4, 0.2]]
# What we hold ourselves to against KServe with its defaults (issue 10).
TARGETS = {"c16 rps": 1.5, "c16 p99": 1.0, "c1 p50": 0.8, "PSS": 0.5}


class PeakMemory:
    """Samples a process tree's RSS and PSS (bench.procs.memory_mb) in a thread while a load
    runs and keeps the largest totals: ``with PeakMemory(pid) as peak: ...; peak.pss_mb``."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        self.pid, self.every_s = pid, every_s
        self.rss_mb = self.pss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        rss, pss = memory_mb(self.pid)
        self.rss_mb, self.pss_mb = max(self.rss_mb, rss), max(self.pss_mb, pss)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


@dataclass
class Peer:
    """The peer's interpreter, or why there is none."""

    python: Path | None
    note: str
    versions: dict[str, str] = field(default_factory=dict)
    install_s: float | None = None


def ensure_peer() -> Peer:
    """``.venv-peer`` with ``PEER_PINS``, made once (about a minute); a stamp file holds the
    pins it was made with, so changing a pin remakes it."""
    python = PEER_VENV / "bin" / "python"
    stamp = PEER_VENV / ".installed"
    wanted = "\n".join(PEER_PINS) + "\n"
    install_s = None
    if not (stamp.exists() and stamp.read_text() == wanted):
        print(
            f"installing the peer ({' '.join(PEER_PINS)}) into {PEER_VENV.name} "
            "(once; about a minute) ...",
            flush=True,
        )
        started = time.monotonic()
        try:
            subprocess.run(
                [sys.executable, "-m", "venv", "--clear", str(PEER_VENV)],
                check=True,
                capture_output=True,
                text=True,
                timeout=300,
            )
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
                + list(PEER_PINS),
                check=True,
                capture_output=True,
                text=True,
                timeout=1200,
            )
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", None) or str(e)
            last = ([line for line in str(detail).splitlines() if line.strip()] or ["?"])[-1]
            note = f"cannot install the peer ({type(e).__name__}): {last[:300]}"
            print(f"peer: {note}; the bench goes on without it (BENCH_PEER=0 skips it)", flush=True)
            return Peer(None, note)
        install_s = time.monotonic() - started
        stamp.write_text(wanted)
        print(f"peer installed in {install_s:.0f} s", flush=True)
    probe = (
        "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
        "('kserve', 'fastapi', 'uvicorn', 'onnxruntime', 'numpy')}))"
    )
    try:
        out = subprocess.run(
            [str(python), "-c", probe], check=True, capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return Peer(None, f"{PEER_VENV.name} is broken ({e}); remove it to remake it")
    versions = json.loads(out)
    return Peer(python, f"kserve {versions['kserve']}", versions, install_s)


@dataclass
class Target:
    """One row: an endpoint of one of the running servers, and its body."""

    name: str
    server: str
    url: str
    body: Path
    c1: list[Load] = field(default_factory=list)
    c16: list[Load] = field(default_factory=list)
    rss_mb: float = 0.0
    pss_mb: float = 0.0
    cpu_us: list[float] = field(default_factory=list)  # server tree CPU per c16 request

    def median(self, loads: list[Load]) -> Load:
        return Load(
            concurrency=loads[0].concurrency,
            rps=statistics.median(load.rps for load in loads),
            p50_ms=statistics.median(load.p50_ms for load in loads),
            p99_ms=statistics.median(load.p99_ms for load in loads),
            errors=sum(load.errors for load in loads),
        )


@dataclass
class Comparison:
    targets: list[Target]
    peer: Peer
    rounds: int
    skipped: str | None = None  # why the peer did not run

    def versus(self, ours: str, peer: str) -> dict[str, Any]:
        by_name = {t.name: t for t in self.targets}
        return ratios(by_name[ours], by_name[peer])


OURS, OURS_V1 = "ours /predict", "ours V1"
KSERVE, KSERVE_QUIET = "kserve V1 (defaults)", "kserve V1, logs off"


@contextmanager
def _servers(peer: Peer, workers: str, folder: Path) -> Iterator[dict[str, tuple[int, str]]]:
    """Every server at once (an idle one costs nothing measurable): name -> (root pid, URL)."""
    servers: dict[str, tuple[int, str]] = {}
    with ExitStack() as stack:
        url = f"http://127.0.0.1:{(port := free_port())}"
        ours_env = {
            "FUNCTION_TARGET": "predict",
            "FUNCTION_SOURCE": "functions/predict/main.py",
            "MODEL_NAME": "iris-svc",
            "WORKERS": workers,
            "HOST": "127.0.0.1",
            "PORT": str(port),
        }  # everything else as shipped (LOG_LEVEL=INFO: no line per request)
        command = [sys.executable, "-m", "functions.core.serve"]
        pid = stack.enter_context(running(command, ours_env, f"{url}/v2/health/ready", REPO))
        servers["ours"] = (pid, url)
        if peer.python is not None:
            quiet = folder / "kserve-quiet-logging.json"
            quiet.write_text(json.dumps(_QUIET_LOGGING))
            for name, extra in (
                ("kserve", []),
                ("kserve-quiet", ["--enable_latency_logging=false", f"--log_config_file={quiet}"]),
            ):
                url = f"http://127.0.0.1:{(port := free_port())}"
                command = [
                    str(peer.python),
                    "bench/kserve_iris.py",
                    f"--model_path={MODEL_FILE}",
                    "--model_name=iris",
                    f"--http_port={port}",
                    f"--grpc_port={free_port()}",
                    f"--workers={workers}",
                    *extra,
                ]
                try:
                    pid = stack.enter_context(running(command, {}, f"{url}/v1/models/iris", REPO))
                except RuntimeError as e:  # the rest of the bench goes on without the peer
                    peer.python, peer.note = None, f"the peer did not start ({e})"
                    print(f"peer: {peer.note}; the bench goes on without it", flush=True)
                    break
                servers[name] = (pid, url)
        yield servers


# KServe's own logging minus its per-request lines: uvicorn's access log and kserve.trace
# (the timing middleware's and the latency log's lines) at WARNING.
_QUIET_LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(process)s %(name)s %(message)s"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "stream": "ext://sys.stderr",
        }
    },
    "loggers": {
        name: {"handlers": ["stderr"], "level": level, "propagate": False}
        for name, level in (
            ("kserve", "INFO"),
            ("kserve.trace", "WARNING"),
            ("uvicorn", "INFO"),
            ("uvicorn.access", "WARNING"),
        )
    },
}


def compare(
    seconds: float, workers: str, rounds: int, with_peer: bool, skip_reason: str = ""
) -> Comparison:
    """Ours (/predict and V1) beside KServe (V1), interleaved over ``rounds`` rounds."""
    peer = ensure_peer() if with_peer else Peer(None, skip_reason or "not asked for")
    folder = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    v1 = folder / "v1.json"
    v1.write_text(json.dumps({"instances": IRIS_ROW}))
    seeds = folder / "predict.json"
    seeds.write_text(json.dumps({"data": IRIS_ROW}))
    try:
        with _servers(peer, workers, folder) as servers:
            base = {name: url for name, (_, url) in servers.items()}
            targets = [
                Target(OURS, "ours", f"{base['ours']}/predict", seeds),
                Target(OURS_V1, "ours", f"{base['ours']}/v1/models/iris-svc:predict", v1),
            ]
            if "kserve-quiet" in servers:
                targets.append(
                    Target(KSERVE, "kserve", f"{base['kserve']}/v1/models/iris:predict", v1)
                )
                targets.append(
                    Target(
                        KSERVE_QUIET,
                        "kserve-quiet",
                        f"{base['kserve-quiet']}/v1/models/iris:predict",
                        v1,
                    )
                )
            for target in targets:
                wrk(target.url, 4, 1, target.body)  # warm the connections and caches
            for i in range(rounds):
                print(f"  round {i + 1}/{rounds}", flush=True)
                for target in targets if i % 2 == 0 else targets[::-1]:
                    with PeakMemory(servers[target.server][0]) as peak:
                        target.c1.append(wrk(target.url, 1, seconds, target.body))
                        c16, cpu_us = measured_cpu(
                            servers[target.server][0],
                            functools.partial(wrk, target.url, 16, seconds, target.body),
                        )
                        target.c16.append(c16)
                        target.cpu_us.append(cpu_us)
                    target.rss_mb = max(target.rss_mb, peak.rss_mb)
                    target.pss_mb = max(target.pss_mb, peak.pss_mb)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return Comparison(targets, peer, rounds, None if peer.python else peer.note)


def ratios(ours: Target, peer: Target) -> dict[str, Any]:
    """ours/peer for each figure, and whether each target of issue 10 is met."""
    o16, p16 = ours.median(ours.c16), peer.median(peer.c16)
    o1, p1 = ours.median(ours.c1), peer.median(peer.c1)
    figures = {
        "c16 rps": o16.rps / p16.rps,
        "c16 p50": o16.p50_ms / p16.p50_ms,
        "c16 p99": o16.p99_ms / p16.p99_ms,
        "c1 p50": o1.p50_ms / p1.p50_ms,
        "c1 p99": o1.p99_ms / p1.p99_ms,
        "RSS": ours.rss_mb / peer.rss_mb,
        "PSS": ours.pss_mb / peer.pss_mb,
        "CPU/req": statistics.median(ours.cpu_us) / statistics.median(peer.cpu_us),
    }
    met = {
        key: (figures[key] >= goal if key == "c16 rps" else figures[key] <= goal)
        for key, goal in TARGETS.items()
    }
    return {"ours": ours.name, "peer": peer.name, "ratios": figures, "met": met}


PAIRS = [(OURS_V1, KSERVE), (OURS, KSERVE), (OURS_V1, KSERVE_QUIET)]


def per_round_ratios(ours: Target, peer: Target) -> dict[str, list[float]]:
    """ours/peer within each round: the two ran back to back, so drift cancels best here."""
    return {
        "c16 rps": [o.rps / p.rps for o, p in zip(ours.c16, peer.c16, strict=True)],
        "c1 p50": [o.p50_ms / p.p50_ms for o, p in zip(ours.c1, peer.c1, strict=True)],
    }


def summary(comparison: Comparison) -> list[str]:
    """The lines printed under the table: drift, ratios ours/peer, the targets."""
    lines = []
    for target in comparison.targets:
        per_round = " / ".join(f"{load.rps:.0f}" for load in target.c16)
        lines.append(f"  {target.name:<22} c16 rps per round: {per_round}")
    if comparison.skipped:
        lines.append(f"peer not measured: {comparison.skipped}")
        return lines
    for ours, peer in PAIRS:
        f = comparison.versus(ours, peer)["ratios"]
        lines.append(
            f"{ours} / {peer}: c16 rps {f['c16 rps']:.2f}x, c16 p50 {f['c16 p50']:.2f}x, "
            f"c16 p99 {f['c16 p99']:.2f}x, c1 p50 {f['c1 p50']:.2f}x, RSS {f['RSS']:.2f}x, "
            f"PSS {f['PSS']:.2f}x, CPU per request {f['CPU/req']:.2f}x"
        )
    by_name = {t.name: t for t in comparison.targets}
    for ours, peer in PAIRS[:1] + PAIRS[2:]:
        per_round = per_round_ratios(by_name[ours], by_name[peer])
        lines.append(
            f"{ours} / {peer}, round by round: c16 rps "
            + " / ".join(f"{x:.2f}" for x in per_round["c16 rps"])
            + "; c1 p50 "
            + " / ".join(f"{x:.2f}" for x in per_round["c1 p50"])
        )
    for ours in (OURS_V1, OURS):
        verdict = comparison.versus(ours, KSERVE)
        checks = ", ".join(
            f"{key} {'>=' if key == 'c16 rps' else '<='} {goal}x "
            f"{'met' if verdict['met'][key] else 'MISSED'} ({verdict['ratios'][key]:.2f}x)"
            for key, goal in TARGETS.items()
        )
        lines.append(f"targets, {ours} vs {KSERVE}: {checks}")
    return lines


def to_json(comparison: Comparison) -> dict[str, Any]:
    out: dict[str, Any] = {
        "peer": asdict(comparison.peer) | {"python": str(comparison.peer.python or "")},
        "pins": list(PEER_PINS),
        "rounds": comparison.rounds,
        "skipped": comparison.skipped,
        "targets": TARGETS,
        "per_round": {
            t.name: {"c1": [asdict(x) for x in t.c1], "c16": [asdict(x) for x in t.c16]}
            for t in comparison.targets
        },
    }
    if not comparison.skipped:
        by_name = {t.name: t for t in comparison.targets}
        out["versus"] = [
            comparison.versus(ours, peer)
            | {"per_round": per_round_ratios(by_name[ours], by_name[peer])}
            for ours, peer in PAIRS
        ]
    return out


def os_load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]
