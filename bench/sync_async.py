"""Sync-async benchmark: the sync answer beside the fast model's floor, and the time until done.

The local platform (`make dev`'s, reduced to imagenet, sync-async, async-worker, the Broker
and the Trigger) runs on loopback. At 1 and at 8 concurrent clients, each client posts the
cat photo, records the sync answer's latency, then polls ``GET /job/<id>`` every 10 ms until
the job ends, recording the time from the POST until done. The same clients calling the
fast predictor directly give the sync answer's reference; the in-process floor is the fast
model alone. The clients are Python threads on the same 2 cores as every server.

    python -m bench.sync_async            # BENCH_SECONDS (default 5) per measurement
"""

from __future__ import annotations

import base64
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from bench.procs import dev_platform, running
from emulators.processes import free_port
from functions.core.cards import load_card
from functions.core.preprocessing import decode_image, to_tensor
from functions.core.runtime import load_predictor
from functions.core.settings import REPO_ROOT

MODELS = REPO_ROOT / "build" / "models"
SERVICES = ("imagenet", "sync-async", "async-worker")


@dataclass(frozen=True)
class Row:
    case: str
    clients: int
    n: int
    p50_ms: float
    p99_ms: float
    rps: float
    failed: int = 0


def floor_ms(model: str = "efficientnet-lite0", threads: int = 2, seconds: float = 2.0) -> float:
    """Median in-process time of the fast model on the cat photo, preprocessing included."""
    card = load_card(REPO_ROOT / "models", model)
    predictor = load_predictor(card, MODELS, threads)
    raw = (MODELS / "samples" / "cat.png").read_bytes()
    assert card.preprocessing is not None
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        predictor.predict(to_tensor(decode_image(raw), card.preprocessing))
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _row(case: str, clients: int, samples: list[float], seconds: float, failed: int) -> Row:
    ordered = sorted(samples) or [float("nan")]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return Row(
        case, clients, len(samples), statistics.median(ordered), p99, len(samples) / seconds, failed
    )


def clients(
    url: str, body: dict[str, str], n: int, seconds: float, poll: bool
) -> tuple[list[float], list[float], int]:
    """``n`` threads posting for ``seconds``: sync latencies, times until done, failures."""
    sync: list[float] = []
    done: list[float] = []
    failed = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def one(index: int) -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while time.monotonic() < stop:
                rid = f"bench-{index}-{i}-{time.monotonic_ns()}"
                i += 1
                started = time.perf_counter()
                answer = client.post(url, json=body, headers={"X-Request-Id": rid})
                answered = time.perf_counter()
                if answer.status_code != 200:
                    with lock:
                        failed[0] += 1
                    continue
                with lock:
                    sync.append((answered - started) * 1000)
                if not poll:
                    continue
                base = url.rsplit("/predict", 1)[0]
                while time.perf_counter() - started < 60:
                    job = client.get(f"{base}/job/{rid}").json()[rid]
                    if job["status"] != "pending":
                        with lock:
                            if job["status"] == "done":
                                done.append((time.perf_counter() - started) * 1000)
                            else:
                                failed[0] += 1
                        break
                    time.sleep(0.01)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sync, done, failed[0]


def _manifests(folder: Path) -> tuple[Path, Path]:
    knative, eventing = folder / "knative", folder / "eventing"
    knative.mkdir()
    eventing.mkdir()
    for name in SERVICES:
        shutil.copy(REPO_ROOT / "knative" / "services" / f"{name}.yaml", knative)
    (knative / "kustomization.yaml").write_text(
        yaml.safe_dump({"namespace": "bench", "resources": [f"{n}.yaml" for n in SERVICES]})
    )
    resources = ["broker.yaml", "sink-binding.yaml", "sync-async.yaml"]
    for name in resources:
        shutil.copy(REPO_ROOT / "eventing" / name, eventing)
    (eventing / "kustomization.yaml").write_text(
        yaml.safe_dump({"namespace": "bench", "resources": resources})
    )
    return knative, eventing


def measure(seconds: float = 5.0) -> list[Row]:
    """Rows: the floor, then per concurrency the direct fast call, the sync answer, done."""
    folder = Path(tempfile.mkdtemp(prefix="bench-sync-async-"))
    knative, eventing = _manifests(folder)
    port = free_port()
    gateway = f"http://127.0.0.1:{port}"
    command = dev_platform(knative, eventing, port)
    env = {
        "JOB_STORE_URL": f"sqlite:///{folder / 'jobs.sqlite3'}",
        "LOG_LEVEL": "WARNING",
        "OUTBOX_DIR": str(folder / "outbox"),
    }
    body = {"image_data": base64.b64encode((MODELS / "samples" / "cat.png").read_bytes()).decode()}
    rows = [Row("fast model floor (in-process)", 0, 0, floor_ms(), float("nan"), float("nan"))]
    try:
        with running(command, env, f"{gateway}/async-worker/health", REPO_ROOT):
            routes = httpx.get(f"{gateway}/_routes").json()["services"]
            imagenet = next(s for s in routes if s["name"] == "imagenet")["traffic"][0]["upstream"]
            clients(f"{gateway}/sync-async/predict", body, 2, 1, poll=True)  # warm-up
            for n in (1, 8):
                direct, _, failed = clients(
                    f"{imagenet}/predict/label", body, n, seconds, poll=False
                )
                rows.append(_row("fast model direct", n, direct, seconds, failed))
                sync, done, failed = clients(
                    f"{gateway}/sync-async/predict", body, n, seconds, poll=True
                )
                rows.append(_row("sync-async: sync answer", n, sync, seconds, failed))
                rows.append(_row("sync-async: until done", n, done, seconds, failed))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def table(rows: list[Row]) -> str:
    head = f"{'case':<32}{'clients':>8}{'n':>7}{'p50 ms':>9}{'p99 ms':>9}{'per s':>8}{'failed':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.case:<32}{r.clients:>8}{r.n:>7}{r.p50_ms:>9.1f}{r.p99_ms:>9.1f}{r.rps:>8.1f}{r.failed:>8}"
        )
    lines.append(
        "(fast model direct: the imagenet Service without the proxy; per s: answers or jobs done)"
    )
    return "\n".join(lines)


def main() -> int:
    print(table(measure(float(os.environ.get("BENCH_SECONDS", "5")))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
