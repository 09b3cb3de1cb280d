"""`make bench`: each model's raw in-process inference (the floor) beside the same model
served over loopback HTTP by the production server, at concurrency 1 and 16.

Numbers are reported as ratios to the floor measured in the same run, so they hold on a
noisy machine, and the peer (KServe, bench/peer.py) is measured interleaved with ours in the
same run. Memory is the peak RSS and PSS of the server's process tree, sampled during its
loads. Environment: BENCH_SECONDS (per load run, default 5), BENCH_WORKERS (server workers
for iris, default 2), BENCH_ROUNDS (interleaved rounds against the peer, default 5),
BENCH_PEER (0: leave the peer out), BENCH_SMOKE (1: iris only, one round, no peer: what CI
runs), BENCH_JSON (output, default build/bench/latest.json).

    python -m bench.run                   # what `make bench` runs, from the repository root
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import peer
from bench.load import Load, wrk
from bench.procs import dev_platform, measured_cpu, running
from emulators.processes import free_port
from functions.core.cards import load_card
from functions.core.preprocessing import decode_image, to_tensor
from functions.core.runtime import load_predictor

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "build" / "models"
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
WORKERS = os.environ.get("BENCH_WORKERS", "2")
SMOKE = os.environ.get("BENCH_SMOKE", "0") == "1"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1" if SMOKE else "5"))
PEER = os.environ.get("BENCH_PEER", "0" if SMOKE else "1") == "1"
IRIS_ROW = [[5.1, 3.5, 1.4, 0.2]]


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    threads: int
    workers: str
    body: dict[str, object]
    env: tuple[tuple[str, str], ...] = ()


@dataclass
class Result:
    case: str
    floor_p50_ms: float
    c1: Load | None = None
    c16: Load | None = None
    rss_mb: float = 0.0
    pss_mb: float = 0.0
    cpu_us: float = 0.0  # CPU of the server's process tree per request during the c16 load
    group: str = ""  # rows of one group print under its title

    def to_json(self) -> dict[str, Any]:
        assert self.c1
        assert self.c16
        return asdict(self) | {
            "rps": self.c16.rps,
            "c1_p50_over_floor": self.c1.p50_ms / self.floor_p50_ms,
        }


def floor_ms(model: str, threads: int, seconds: float) -> float:
    """Median in-process time of one prediction, preprocessing included for images."""
    card = load_card(REPO / "models", model)
    predictor = load_predictor(card, MODELS, threads)
    if card.preprocessing is None:
        x = np.asarray(IRIS_ROW, np.float32)

        def once() -> None:
            predictor.predict(x)
    else:
        raw = (MODELS / "samples" / "cat.png").read_bytes()
        spec = card.preprocessing

        def once() -> None:
            predictor.predict(to_tensor(decode_image(raw), spec))

    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline and len(times) < 20000:
        started = time.perf_counter()
        once()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def serve(case: Case, port: int, body_file: Path) -> Result:
    result = Result(case.name, floor_ms(case.model, case.threads, min(SECONDS, 3)))
    env = {
        "FUNCTION_TARGET": "predict",
        "FUNCTION_SOURCE": "functions/predict/main.py",
        "MODEL_NAME": case.model,
        "MODEL_THREADS": str(case.threads),
        "WORKERS": case.workers,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
        **dict(case.env),
    }
    body_file.write_text(json.dumps(case.body))
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "functions.core.serve"]
    with running(command, env, f"{url}/v2/health/ready", REPO) as pid:
        wrk(f"{url}/predict", 4, 1, body_file)  # warm the connections and caches
        with peer.PeakMemory(pid) as peak:
            result.c1 = wrk(f"{url}/predict", 1, SECONDS, body_file)
            result.c16, result.cpu_us = measured_cpu(
                pid, lambda: wrk(f"{url}/predict", 16, SECONDS, body_file)
            )
        result.rss_mb, result.pss_mb = peak.rss_mb, peak.pss_mb
    return result


def through_gateway(workers: str, body_file: Path) -> list[Result]:
    """iris behind the local gateway (`make dev`'s) beside the same process called directly,
    interleaved (direct, gateway, direct, gateway) so machine drift shows in both."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="bench-knative-"))
    shutil.copy(REPO / "knative" / "services" / "iris.yaml", folder / "iris.yaml")
    (folder / "kustomization.yaml").write_text("namespace: bench\nresources:\n  - iris.yaml\n")
    body_file.write_text(json.dumps({"data": IRIS_ROW}))
    port = free_port()
    gateway = f"http://127.0.0.1:{port}"
    command = dev_platform(folder, folder / "none", port)
    floor = floor_ms("iris-svc", 1, min(SECONDS, 3))
    direct, via = Result("iris direct (1 hop)", floor), Result("iris via gateway (2 hops)", floor)
    with running(
        command,
        {"WORKERS": workers, "LOG_LEVEL": "WARNING"},
        f"{gateway}/iris/v2/health/ready",
        REPO,
    ):
        import httpx

        upstream = httpx.get(f"{gateway}/_routes").json()["services"][0]["traffic"][0]["upstream"]
        urls = {"direct": f"{upstream}/predict", "via": f"{gateway}/iris/predict"}
        wrk(urls["via"], 4, 1, body_file)
        runs: dict[str, list[Load]] = {"direct": [], "via": []}
        for _ in range(2):
            for key in ("direct", "via"):
                runs[key].append(wrk(urls[key], 1, SECONDS / 2, body_file))
        for key, result in (("direct", direct), ("via", via)):
            result.c1 = min(runs[key], key=lambda load: load.p50_ms)
            result.c16 = wrk(urls[key], 16, SECONDS, body_file)
    shutil.rmtree(folder)
    return [direct, via]


def logging_on_off(workers: str, body_file: Path) -> list[Result]:
    """iris with prediction logging off; on (outbox -> the real prediction-log-ingest Service, whose
    SQLite store runs on the same 2 cores); on with the sink away (what the request path
    itself pays: events only spool); then off again to show drift."""
    import tempfile

    from functions.prediction_log.store import Query, SqliteLogStore

    state = Path(tempfile.mkdtemp(prefix="bench-log-"))
    log_port = free_port()
    log_url = f"http://127.0.0.1:{log_port}"
    log_env = {
        "FUNCTION_TARGET": "prediction_log_ingest",
        "FUNCTION_SOURCE": "functions/prediction_log/main.py",
        "LOG_STORE_URL": f"sqlite:///{state / 'log.sqlite3'}",
        "HOST": "127.0.0.1",
        "PORT": str(log_port),
        "LOG_LEVEL": "WARNING",
    }
    away = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cases = [
        ("iris logging off", ()),
        ("iris logging on", (("K_SINK", log_url), ("OUTBOX_DIR", str(state / "outbox")))),
        ("iris logging on, sink away", (("K_SINK", away), ("OUTBOX_DIR", str(state / "spool")))),
        ("iris logging off (again)", ()),
    ]
    body = {"data": IRIS_ROW}
    with running(
        [sys.executable, "-m", "functions.core.serve"], log_env, f"{log_url}/health", REPO
    ):
        results = [
            serve(
                Case(name, "iris-svc", 1, workers, body, env + (("LOG_LEVEL", "INFO"),)),
                free_port(),
                body_file,
            )
            for name, env in cases
        ]
        store = SqliteLogStore(state / "log.sqlite3")  # the query API is another Service
        stored = len(store.query(Query(limit=10)))
        store.close()
    assert stored, "logging on stored nothing"
    return results


def table(results: list[Result]) -> str:
    head = (
        f"{'case':<30}{'floor p50':>10}{'c1 p50':>9}{'c1 p99':>9}{'c1/floor':>9}"
        f"{'c16 rps':>9}{'c16 p50':>9}{'c16 p99':>9}{'RSS MB':>8}{'PSS MB':>8}{'CPU/req':>9}"
    )
    lines = [head, "-" * len(head)]
    group = ""
    for r in results:
        assert r.c1
        assert r.c16
        if r.group != group:
            group = r.group
            lines.append(f"-- {group}")
        memory = f"{r.rss_mb:>8.0f}{r.pss_mb:>8.0f}" if r.rss_mb else f"{'-':>8}{'-':>8}"
        memory += f"{r.cpu_us:>9.0f}" if r.cpu_us else f"{'-':>9}"
        errors = f"  ({r.c1.errors + r.c16.errors} errors)" if r.c1.errors + r.c16.errors else ""
        lines.append(
            f"{r.case:<30}{r.floor_p50_ms:>10.3f}{r.c1.p50_ms:>9.3f}{r.c1.p99_ms:>9.3f}"
            f"{r.c1.p50_ms / r.floor_p50_ms:>9.1f}{r.c16.rps:>9.0f}{r.c16.p50_ms:>9.2f}"
            f"{r.c16.p99_ms:>9.2f}{memory}{errors}"
        )
    lines.append(
        "(milliseconds; c1/floor = served c1 p50 over the in-process floor; memory = peak of"
        " the server's process tree during its loads, PSS counting shared pages once; CPU/req ="
        " microseconds of CPU that tree used per request at c16)"
    )
    return "\n".join(lines)


def peer_rows(floor: float) -> tuple[list[Result], peer.Comparison]:
    """The peer comparison's rows: medians over the interleaved rounds."""
    skip = "BENCH_SMOKE=1" if SMOKE else "BENCH_PEER=0"
    comparison = peer.compare(SECONDS, WORKERS, ROUNDS, PEER, skip)
    group = (
        f"peer, same run: iris-svc, {WORKERS} worker processes each, median of "
        f"{ROUNDS} interleaved round{'s' if ROUNDS > 1 else ''}"
        + (f", {comparison.peer.note}" if comparison.peer.python else "")
    )
    rows = [
        Result(
            t.name,
            floor,
            t.median(t.c1),
            t.median(t.c16),
            t.rss_mb,
            t.pss_mb,
            statistics.median(t.cpu_us) if t.cpu_us else 0.0,
            group,
        )
        for t in comparison.targets
    ]
    return rows, comparison


def main() -> int:
    started, load_start = time.monotonic(), peer.os_load()
    print(
        f"bench: {SECONDS:g} s per load, {os.cpu_count()} CPUs, load average {load_start}"
        + (" (smoke: iris only)" if SMOKE else "")
        + ("" if PEER else " (no peer)"),
        flush=True,
    )
    cases = [Case(f"iris-svc ({WORKERS} workers)", "iris-svc", 1, WORKERS, {"data": IRIS_ROW})]
    if not SMOKE:
        cat = base64.b64encode((MODELS / "samples" / "cat.png").read_bytes()).decode()
        cases += [
            Case("efficientnet-lite0 onnx", "efficientnet-lite0", 2, "1", {"image_data": cat}),
            Case(
                "efficientnet-lite0 tflite",
                "efficientnet-lite0-tflite",
                2,
                "1",
                {"image_data": cat},
            ),
        ]
    out = Path(os.environ.get("BENCH_JSON", REPO / "build" / "bench" / "latest.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    summary: dict[str, Any] = {}
    for i, case in enumerate(cases):
        print(f"measuring {case.name} ...", flush=True)
        results.append(serve(case, free_port(), out.with_suffix(f".body{i}.json")))
        results[-1].group = "predictor, production server (functions.core.serve)"
    if not SMOKE:
        print("measuring prediction logging off / on / off ...", flush=True)
        logged = logging_on_off(WORKERS, out.with_suffix(".body-log.json"))
        for row in logged:
            row.group = "prediction logging (iris-svc)"
        results.extend(logged)
        print("measuring iris through the local gateway ...", flush=True)
        hops = through_gateway(WORKERS, out.with_suffix(".body-gw.json"))
        for row in hops:
            row.group = "local gateway (iris-svc; c1: best of 2)"
        results.extend(hops)
        from bench import fanout, sync_async  # they import this module's helpers

        print("measuring the fan-out proxy (1 and 3 backends) ...", flush=True)
        fanned = fanout.fanout_rows(out.with_suffix(".body-fanout.json"))
        for row in fanned:
            row.group = "horizontal microservices: fan-out proxy (through the gateway)"
        results.extend(fanned)
        print("measuring sync-async ...", flush=True)
        sync_rows = sync_async.measure(SECONDS)
        from bench import serverless

        print("measuring cold starts and idle memory (scale to zero) ...", flush=True)
        cold, memory = serverless.cold_starts(), serverless.idle_memory()
        summary["cold_start_seconds"] = cold
        summary["idle_memory_mb"] = {"all_up": memory[0], "at_zero": memory[1]}
    print("measuring ours beside the peer (KServe), interleaved ...", flush=True)
    rows, comparison = peer_rows(results[0].floor_p50_ms)
    results.extend(rows)
    print(table(results))
    if not SMOKE:
        gw_cost = hops[1].c1.p50_ms - hops[0].c1.p50_ms  # type: ignore[union-attr]
        print(f"gateway hop at c1: +{gw_cost:.3f} ms p50")
        off = (logged[0].c16.rps + logged[3].c16.rps) / 2  # type: ignore[union-attr]
        off_cpu = (logged[0].cpu_us + logged[3].cpu_us) / 2
        for row in logged[1:3]:
            print(
                f"{row.case}: {row.c16.rps / off:.2f}x the rps of logging off at c16;"  # type: ignore[union-attr]
                f" {row.cpu_us:.0f} us CPU per request in the Service's processes"
                f" ({row.cpu_us / off_cpu - 1:+.0%} over logging off)"
            )
        summary["gateway_hop_c1_p50_ms"] = gw_cost
        summary["logging_rps_vs_off"] = {r.case: r.c16.rps / off for r in logged[1:3]}  # type: ignore[union-attr]
        summary["logging_cpu_vs_off"] = {r.case: r.cpu_us / off_cpu for r in logged[1:3]}
    if not SMOKE:
        print(fanout.summary(fanned))
        print(sync_async.table(sync_rows))
        for line in serverless.summary(cold, memory):
            print(line)
        summary["fanout_3_over_1"] = fanout.summary(fanned)
    for line in peer.summary(comparison):
        print(line)
    load_end = peer.os_load()
    print(f"load average at the end {load_end}; {time.monotonic() - started:.0f} s in all")
    report = {
        "seconds_per_load": SECONDS,
        "smoke": SMOKE,
        "cpus": os.cpu_count(),
        "load_average": {"start": load_start, "end": load_end},
        "cases": [r.to_json() for r in results],
        **summary,
        "peer": peer.to_json(comparison),
    }
    out.write_text(json.dumps(report, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
