"""What scale to zero costs and saves on `make dev`'s platform: the cold start of iris and of
an image model (from the request to its answer, the activator holding it while the replica
starts and loads its model), and the memory of an idle platform before and after its
``min-scale: "0"`` Services have scaled to zero. Short autoscaler windows (flags) make the
idle wait seconds, not minutes."""

from __future__ import annotations

import base64
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.procs import dev_platform, memory_mb, running
from bench.run import IRIS_ROW, MODELS
from emulators.manifests import knative_services, load_kustomization
from emulators.processes import free_port

REPO = Path(__file__).resolve().parents[1]
SHORT = ("--stable-window=6s", "--scale-to-zero-grace-period=1s")
ROUNDS = 3


def _replicas(gateway: str) -> dict[str, int]:
    services = httpx.get(f"{gateway}/_routes", timeout=10).json()["services"]
    return {s["name"]: s["traffic"][0]["replicas"] for s in services if s["traffic"]}


def _until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} after {seconds:g} s")
        time.sleep(0.2)


def cold_starts() -> dict[str, list[float]]:
    """Seconds from request to answer after a scale to zero, ``ROUNDS`` times, for iris and
    imagenet (its min-scale 1 set to 0 for this)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-serverless-"))
    names = ("iris", "imagenet")
    for name in names:
        doc = yaml.safe_load((REPO / "knative" / "services" / f"{name}.yaml").read_text())
        doc["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] = (
            "0"
        )
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump({"namespace": "bench", "resources": [f"{n}.yaml" for n in names]})
    )
    cat = base64.b64encode((MODELS / "samples" / "cat.png").read_bytes()).decode()
    bodies = {"iris": {"data": IRIS_ROW}, "imagenet": {"image_data": cat}}
    port = free_port()
    gateway = f"http://127.0.0.1:{port}"
    command = dev_platform(folder, folder / "none", port, *SHORT)
    took: dict[str, list[float]] = {name: [] for name in names}
    with running(command, {"LOG_LEVEL": "WARNING"}, f"{gateway}/iris/v2/health/ready", REPO):
        for _ in range(ROUNDS):
            for name in names:
                _until(lambda n=name: _replicas(gateway)[n] == 0, 60, f"{name} not at zero")
                started = time.monotonic()
                answer = httpx.post(f"{gateway}/{name}/predict", json=bodies[name], timeout=120)
                took[name].append(time.monotonic() - started)
                answer.raise_for_status()
    shutil.rmtree(folder)
    return took


def idle_memory() -> tuple[tuple[float, float], tuple[float, float]]:
    """(RSS, PSS) in MB of the whole platform over the project's manifests, idle: with the
    default windows once every Service is ready (what an always-on platform holds), then with
    short ones once every min-scale 0 Service has scaled to zero."""
    to_zero = {
        spec.name
        for spec in knative_services(load_kustomization(REPO / "knative"))
        if spec.annotations.get("autoscaling.knative.dev/min-scale", "0") == "0"
    }
    measured = []
    for flags, settled in (
        (("--stable-window=60s",), lambda r: min(r.values()) >= 1),
        (SHORT, lambda r: all(r[name] == 0 for name in to_zero)),
    ):
        port = free_port()
        gateway = f"http://127.0.0.1:{port}"
        command = dev_platform(REPO / "knative", REPO / "eventing", port, *flags)
        ready = f"{gateway}/iris/v2/health/ready"
        with running(command, {"LOG_LEVEL": "WARNING"}, ready, REPO) as pid:
            _until(lambda s=settled, g=gateway: s(_replicas(g)), 180, f"not settled ({flags})")
            time.sleep(2)  # the last drained processes exit
            measured.append(memory_mb(pid))
    return measured[0], measured[1]


def summary(took: dict[str, list[float]], memory: tuple[tuple[float, float], ...]) -> list[str]:
    lines = [
        f"cold start {name}: median {statistics.median(s):.2f} s (min {min(s):.2f}, max"
        f" {max(s):.2f}, {len(s)} rounds), request to answer"
        for name, s in took.items()
    ]
    (up_rss, up_pss), (idle_rss, idle_pss) = memory
    lines.append(
        f"idle make dev: RSS {up_rss:.0f} MB (PSS {up_pss:.0f}) with every Service up,"
        f" {idle_rss:.0f} MB (PSS {idle_pss:.0f}) once min-scale 0 Services are at zero"
    )
    return lines


if __name__ == "__main__":
    for line in summary(cold_starts(), idle_memory()):
        print(line)
