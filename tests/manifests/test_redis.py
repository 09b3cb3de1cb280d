"""The cluster's job store keeps its data: knative/redis.yaml's own arguments, run by a real
redis-server on loopback, bring every job back after a SIGKILL and a restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from emulators.manifests import REPO_ROOT
from functions.core.jobstore import Job, open_store
from tests.redis_server import running_redis


def redis_statefulset() -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO_ROOT / "knative" / "redis.yaml").read_text())
    return next(d for d in docs if d["kind"] == "StatefulSet")


def test_redis_keeps_an_append_only_file_on_a_claimed_volume() -> None:
    statefulset = redis_statefulset()
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    options = dict(zip(args[::2], args[1::2], strict=True))
    assert (options["--appendonly"], options["--appendfsync"]) == ("yes", "everysec")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == options["--dir"]


def test_its_arguments_bring_jobs_back_after_a_kill(tmp_path: Path) -> None:
    (container,) = redis_statefulset()["spec"]["template"]["spec"]["containers"]
    args = [str(tmp_path) if a == "/data" else a for a in container["args"]]
    with running_redis(args) as server:
        store = open_store(server.url, ttl=60)
        try:
            now = time.time()
            assert store.create(Job("kept", now, now + 60, {"model": "fast"}))
            since = store.since()
            time.sleep(1.5)  # appendfsync everysec: at most the last second is lost
            server.restart()  # SIGKILL by pid, then the same arguments again
            kept = store.get("kept")
            assert kept is not None
            assert kept.fast == {"model": "fast"}
            assert store.since() == since  # the same epoch: nothing was lost
        finally:
            store.close()
