"""Revisions from manifest changes while the platform runs (as `make dev` follows edits):
a Service file added starts, a changed template rolls out as the next revision with not one
request failed, a Service file removed drains and stops."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from emulators.manifests import REPO_ROOT
from tests.helpers import LocalPlatform, poll_until, refusing, wait_for

pytestmark = pytest.mark.e2e
SETOSA = {"data": [[5.1, 3.5, 1.4, 0.2]]}


def write(path: Path, docs: list[Any]) -> None:
    """Whole, as ``kubectl apply`` sees a file: the watch never reads half of one."""
    partial = path.with_suffix(".partial")
    partial.write_text(yaml.safe_dump_all(docs))
    os.replace(partial, path)


def put_service(knative: Path, name: str, env: dict[str, str] | None = None) -> None:
    """``knative/services/<name>.yaml`` from the repository's, one worker (two cores go
    further), with ``env`` set over its container's."""
    docs = list(
        yaml.safe_load_all((REPO_ROOT / "knative" / "services" / f"{name}.yaml").read_text())
    )
    container = docs[0]["spec"]["template"]["spec"]["containers"][0]
    values = {"WORKERS": "1", **(env or {})}
    kept = [e for e in container["env"] if e["name"] not in values]
    container["env"] = kept + [{"name": k, "value": v} for k, v in values.items()]
    (knative / "services").mkdir(parents=True, exist_ok=True)
    write(knative / "services" / f"{name}.yaml", docs)


def list_services(knative: Path, names: list[str]) -> None:
    resources = [f"services/{n}.yaml" for n in names]
    write(knative / "kustomization.yaml", [{"namespace": "t", "resources": resources}])


@contextmanager
def platform(tmp_path: Path, names: list[str]) -> Iterator[LocalPlatform]:
    knative = tmp_path / "knative"
    for name in names:
        put_service(knative, name)
    list_services(knative, names)
    running = LocalPlatform(knative, None, {}, watch_manifests=True)
    try:
        yield running
    finally:
        running.stop()


class Load:
    """Clients predicting through ``path`` in a bounded loop until ``stop``; every answer's
    status and ``mode`` (the variant that answered) kept per client, in order."""

    def __init__(self, url: str, path: str, clients: int = 2) -> None:
        self.answers: list[list[tuple[int, str | None]]] = [[] for _ in range(clients)]
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(url, path, mine)) for mine in self.answers
        ]
        for thread in self._threads:
            thread.start()

    def _client(self, url: str, path: str, mine: list[tuple[int, str | None]]) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            for _ in range(20_000):  # bounded; stopped long before
                if self._stop.is_set():
                    return
                response = http.post(path, json=SETOSA)
                mode = response.json().get("mode") if response.status_code == 200 else None
                mine.append((response.status_code, mode))

    def count(self) -> int:
        return sum(len(mine) for mine in self.answers)

    def stop(self) -> list[int]:
        """Every status seen, once the clients are done."""
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        return [status for mine in self.answers for status, _ in mine]


def traffic(running: LocalPlatform, name: str) -> list[dict[str, Any]]:
    routes = httpx.get(f"{running.url}/_routes").json()["services"]
    return [t for entry in routes if entry["name"] == name for t in entry["traffic"]]


def test_a_service_file_added_starts_while_another_route_has_a_load(tmp_path: Path) -> None:
    with platform(tmp_path, ["iris"]) as running:
        assert httpx.post(f"{running.url}/iris-setosa/predict", json=SETOSA).status_code == 404
        load = Load(running.url, "/iris/predict")
        try:
            put_service(tmp_path / "knative", "iris-setosa")
            list_services(tmp_path / "knative", ["iris", "iris-setosa"])

            def answered() -> bool | None:
                # held by the activator while it starts: 200 once the watch saw the file
                url = f"{running.url}/iris-setosa/predict"
                return True if httpx.post(url, json=SETOSA, timeout=60).status_code == 200 else None

            wait_for(answered, 60, "iris-setosa started from its new file")
            poll_until(lambda: load.count() > 20, 30, "the load on iris goes on")
        finally:
            statuses = load.stop()
        assert set(statuses) == {200}
        assert [t["revision"] for t in traffic(running, "iris-setosa")] == ["iris-setosa-00001"]


def test_a_changed_template_rolls_out_as_the_next_revision_without_a_failed_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with platform(tmp_path, ["iris"]) as running:
        old = running.launcher.revisions["iris"]
        old_url = old.url
        assert old.spec.revision == "iris-00001"
        assert old_url
        load = Load(running.url, "/iris/predict")
        try:
            poll_until(lambda: load.count() > 20, 30, "the load on iris runs")
            put_service(tmp_path / "knative", "iris", {"VARIANT": "next"})
            new = wait_for(lambda: running.launcher.status("iris-00002"), 30, "the next revision")
            # latestRevision traffic stays on iris-00001 until iris-00002 is ready
            poll_until(lambda: new.ready, 60, "iris-00002 ready")
            before = [len(mine) for mine in load.answers]
            poll_until(
                lambda: all(len(m) > b + 10 for m, b in zip(load.answers, before, strict=True)),
                30,
                "each client goes on after it",
            )
        finally:
            statuses = load.stop()
        assert len(statuses) > 40
        assert set(statuses) == {200}
        for mine in load.answers:  # each client: the old revision's answers, then the new's
            modes = [mode for _, mode in mine]
            assert modes[0] is None
            assert modes[-1] == "next"
            switched = modes.index("next")
            assert set(modes[switched:]) == {"next"}, "an answer from iris-00001 after the switch"
        assert [t["revision"] for t in traffic(running, "iris")] == ["iris-00002"]
        poll_until(lambda: running.launcher.status("iris-00001") is None, 40, "iris-00001 gone")
        assert old.stopped
        wait_for(refusing(old_url), 10, "iris-00001's process gone")
        assert running.launcher.revisions["iris"] is new
    log = capsys.readouterr().out
    assert "iris + revision iris-00002: its template changed (from iris-00001)" in log
    assert "iris > latestRevision traffic now goes to iris-00002: it is ready" in log
    assert "iris - revision iris-00001 drains: no traffic points at it" in log
    assert "iris - revision iris-00001 stopped" in log


def test_a_service_file_removed_drains_and_stops(tmp_path: Path) -> None:
    with platform(tmp_path, ["iris", "iris-setosa"]) as running:
        setosa = running.launcher.revisions["iris-setosa"]
        url = setosa.url
        assert url
        load = Load(running.url, "/iris/predict", clients=1)
        try:
            list_services(tmp_path / "knative", ["iris"])
            (tmp_path / "knative" / "services" / "iris-setosa.yaml").unlink()

            def routed() -> bool:
                return (
                    httpx.post(f"{running.url}/iris-setosa/predict", json=SETOSA).status_code == 404
                )

            poll_until(routed, 30, "iris-setosa's route 404s")
            poll_until(lambda: setosa.stopped, 30, "iris-setosa stopped")
            wait_for(refusing(url), 10, "iris-setosa's process gone")
            poll_until(lambda: load.count() > 10, 30, "the load on iris goes on")
        finally:
            statuses = load.stop()
        assert set(statuses) == {200}
        assert "iris-setosa" not in running.launcher.revisions
        gone = lambda: running.launcher.status("iris-setosa-00001") is None  # noqa: E731
        poll_until(gone, 10, "iris-setosa-00001 no longer listed")
