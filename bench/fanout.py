"""The fan-out proxy over three backends beside the same proxy over one (`make bench` rows).

One local platform (`python -m emulators.dev`) over the project's manifests for
``iris-setosa``, ``iris-versicolor``, ``iris-virginica`` and ``fanout``, plus variants of
the same proxy manifest: over setosa only (``-one``), and with ``MAX_CONNECTIONS=1`` (one
call at a time per worker: the calls one after another, ``-serial``). Each proxy runs twice:
over the backends as they are (loopback, sub-millisecond: CPU-bound), and over the same
backends behind Istio VirtualServices that delay every call by ``DELAY`` (``fault.delay``,
honoured by the gateway), which stands for the network and model time of backends on other
machines, the regime the pattern is for. Everything is measured through the gateway as a
user calls it (client -> gateway -> proxy -> gateway -> backends), interleaved so machine
drift shows in every row. Target: three backends within 1.25x of one (c1 p50).

    python -m bench.fanout      # BENCH_SECONDS as bench.run
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.load import Load, wrk
from bench.procs import dev_platform, memory_mb, running, tree_pids
from bench.run import IRIS_ROW, SECONDS, Result, floor_ms, table
from emulators.processes import free_port

REPO = Path(__file__).resolve().parents[1]
SERVICES = REPO / "knative" / "services"
TARGET = 1.25
DELAY = "10ms"
BACKENDS = ("iris-setosa", "iris-versicolor", "iris-virginica")
SPECIES = tuple(b.removeprefix("iris-") for b in BACKENDS)


def _url(host: str) -> str:
    return f"http://{host}.ml-serving.svc.cluster.local"


def _proxy(name: str, backends: str, **env: str) -> dict[str, Any]:
    """The project's fanout manifest renamed, over ``backends``, with env values replaced."""
    doc: dict[str, Any] = yaml.safe_load((SERVICES / "fanout.yaml").read_text())
    doc["metadata"]["name"] = name
    container = doc["spec"]["template"]["spec"]["containers"][0]
    values = {e["name"]: e["value"] for e in container["env"]} | {"BACKENDS": backends, **env}
    container["env"] = [{"name": k, "value": v} for k, v in values.items()]
    return doc


def _delayed(backend: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": f"slow-{backend}"},
        "spec": {
            "hosts": [f"slow-{backend}.ml-serving.svc.cluster.local"],
            "http": [
                {
                    "fault": {"delay": {"fixedDelay": DELAY, "percentage": {"value": 100}}},
                    "route": [{"destination": {"host": f"{backend}.ml-serving.svc.cluster.local"}}],
                }
            ],
        },
    }


def _manifests(folder: Path) -> dict[str, str]:
    """Write the kustomization; answer {row name: the Service it measures}."""
    files = {f"{b}.yaml": yaml.safe_load((SERVICES / f"{b}.yaml").read_text()) for b in BACKENDS}
    files["fanout.yaml"] = yaml.safe_load((SERVICES / "fanout.yaml").read_text())
    rows = {f"{b} via gateway": b for b in BACKENDS}
    for prefix, label in (("", "0 ms"), ("slow-", DELAY)):
        three = ",".join(f"{s}={_url(prefix + b)}" for s, b in zip(SPECIES, BACKENDS, strict=True))
        one = three.split(",")[0]
        name = f"fanout-{prefix}"
        for suffix, backends, env, row in (
            ("one", one, {}, f"fanout 1 backend, {label}"),
            ("three", three, {}, f"fanout 3 backends, {label}"),
            ("serial", three, {"MAX_CONNECTIONS": "1"}, f"fanout 3 serial, {label}"),
        ):
            files[f"{name}{suffix}.yaml"] = _proxy(f"{name}{suffix}", backends, **env)
            rows[row] = f"{name}{suffix}"
    for b in BACKENDS:
        files[f"slow-{b}.yaml"] = _delayed(b)
    for file, doc in files.items():
        (folder / file).write_text(yaml.safe_dump(doc))
    resources = "".join(f"  - {file}\n" for file in files)
    (folder / "kustomization.yaml").write_text(f"namespace: ml-serving\nresources:\n{resources}")
    return rows


def fanout_rows(body_file: Path) -> list[Result]:
    """Rows for bench.run's table: each backend alone, then each proxy variant."""
    folder = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    services = _manifests(folder)
    body_file.write_text(json.dumps({"data": IRIS_ROW}))
    port = free_port()
    gateway = f"http://127.0.0.1:{port}"
    command = dev_platform(folder, folder / "none", port)
    floor = floor_ms("iris-setosa", 1, min(SECONDS, 3))
    urls = {row: f"{gateway}/{service}/predict" for row, service in services.items()}
    rows = {row: Result(row, floor) for row in urls}
    with running(command, {"LOG_LEVEL": "WARNING"}, f"{gateway}/_routes", REPO) as pid:
        for service in services.values():
            _wait(f"{gateway}/{service}/health")
        for url in urls.values():
            wrk(url, 4, 1, body_file)  # warm the connections and the pools
        runs: dict[str, list[Load]] = {row: [] for row in urls}
        for _ in range(2):
            for row, url in urls.items():
                runs[row].append(wrk(url, 1, SECONDS / 2, body_file))
        for row, url in urls.items():
            rows[row].c1 = min(runs[row], key=lambda load: load.p50_ms)
            rows[row].c16 = wrk(url, 16, SECONDS, body_file)
        for row, service in services.items():
            if service.startswith("fanout-") and not service.endswith("serial"):
                rows[row].rss_mb, rows[row].pss_mb = memory_mb(_service_pid(pid, service))
    shutil.rmtree(folder)
    return list(rows.values())


def _service_pid(root: int, service: str) -> int:
    """The server process the launcher started for ``service`` (its workers are below it)."""
    marker = f"K_SERVICE={service}".encode()
    for pid in tree_pids(root):
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                return pid  # tree_pids lists parents before their children
        except OSError:
            continue
    raise RuntimeError(f"no process of {service} under {root}")


def _wait(url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


def summary(rows: list[Result]) -> str:
    """The pattern's claim in numbers (c1 p50): three backends cost about one, not the sum."""
    c1 = {r.case: r.c1.p50_ms for r in rows if r.c1 is not None}
    lines = []
    for label in ("0 ms", DELAY):
        one, three = c1[f"fanout 1 backend, {label}"], c1[f"fanout 3 backends, {label}"]
        serial = c1[f"fanout 3 serial, {label}"]
        verdict = "ok" if three / one <= TARGET else "over"
        lines.append(
            f"fan-out c1 p50, backends +{label}: 3 backends {three:.3f} ms = {three / one:.2f}x "
            f"the proxy over 1 (target <= {TARGET}x: {verdict}); the same calls one after "
            f"another {serial:.3f} ms"
        )
    return "\n".join(lines)


def main() -> int:
    body = REPO / "build" / "bench" / "fanout.body.json"
    body.parent.mkdir(parents=True, exist_ok=True)
    rows = fanout_rows(body)
    print(table(rows))
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
