"""Start a server on loopback for the benchmark, wait for it, measure its memory, stop it."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.load import Load
from emulators.processes import spawn, stop_group


def dev_platform(knative: Path, eventing: Path, port: int, *flags: str) -> list[str]:
    """The command running `make dev`'s platform over these manifests (``eventing`` may not
    exist). Without ``flags``, each Service is held at one replica: the rows compare one
    process behind the gateway with the same process called directly, so the autoscaler must
    not add a second."""
    return [
        sys.executable, "-m", "emulators.dev",
        f"--knative={knative}", f"--eventing={eventing}", f"--port={port}",
        *(flags or ["--max-scale-limit=1"]),
    ]  # fmt: skip


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def cpu_seconds(root: int) -> float:
    """User plus system CPU time a process tree has used so far (its live processes)."""
    ticks = 0
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def measured_cpu(root: int, load: Callable[[], Load]) -> tuple[Load, float]:
    """Run ``load`` and say what CPU the tree of ``root`` spent per request meanwhile (us)."""
    before = cpu_seconds(root)
    done = load()
    return done, (cpu_seconds(root) - before) / max(done.requests, 1) * 1e6


def memory_mb(root: int) -> tuple[float, float]:
    """(RSS, PSS) of a process tree in MB; PSS counts shared pages once across workers."""
    rss = pss = 0
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("Rss", "Pss"):
                    kb = int(value.split()[0])
                    rss, pss = (rss + kb, pss) if key == "Rss" else (rss, pss + kb)
        except OSError:
            continue
    return rss / 1024, pss / 1024


@contextmanager
def running(command: list[str], env: Mapping[str, str], ready_url: str, cwd: Path) -> Iterator[int]:
    process = spawn(command, env, cwd)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited with {process.returncode}")
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{ready_url} not ready after 120 s")
            time.sleep(0.1)
        yield process.pid
    finally:
        stop_group(process, 20)
