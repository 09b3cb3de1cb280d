"""Revision names, what counts as a template change, and where latestRevision traffic goes."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulators.launcher import Launcher
from emulators.manifests import Resource, service_spec
from emulators.revisions import revision_name, routed, template_hash
from emulators.routing import RouteTable
from tests.helpers import poll_until

TEMPLATE: dict[str, Any] = {
    "metadata": {"annotations": {"autoscaling.knative.dev/min-scale": "0"}},
    "spec": {
        "containerConcurrency": 2,
        "containers": [{"image": "x", "env": [{"name": "MODEL_NAME", "value": "iris-svc"}]}],
    },
}


def ksvc(template: dict[str, Any], traffic: list[dict[str, Any]] | None = None) -> Resource:
    doc: dict[str, Any] = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "iris", "namespace": "ns"},
        "spec": {"template": template},
    }
    if traffic is not None:
        doc["spec"]["traffic"] = traffic
    return Resource(doc, Path("iris.yaml"))


def test_the_same_template_in_another_key_order_is_no_change() -> None:
    reordered = {"spec": dict(reversed(TEMPLATE["spec"].items())), **TEMPLATE}
    assert template_hash(reordered) == template_hash(TEMPLATE)


def test_an_env_value_or_an_annotation_changed_is_a_change() -> None:
    env = copy.deepcopy(TEMPLATE)
    env["spec"]["containers"][0]["env"][0]["value"] = "iris-rf"
    annotation = copy.deepcopy(TEMPLATE)
    annotation["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] = "1"
    hashes = {template_hash(t) for t in (TEMPLATE, env, annotation)}
    assert len(hashes) == 3
    assert service_spec(ksvc(env)).template_hash != service_spec(ksvc(TEMPLATE)).template_hash


def test_revisions_are_numbered_by_generation_unless_the_template_names_one() -> None:
    assert revision_name("iris", 1, None) == ("iris-00001", 1)
    assert revision_name("iris", 12, None) == ("iris-00012", 12)
    assert revision_name("iris", 3, "iris-blue") == ("iris-blue", 3)
    # a removed Service's revision still draining keeps its name
    assert revision_name("iris", 1, None, {"iris-00001", "iris-00002"}) == ("iris-00003", 3)


def test_the_template_name_and_latest_revision_flags_come_from_the_manifest() -> None:
    named = copy.deepcopy(TEMPLATE)
    named["metadata"]["name"] = "iris-blue"
    traffic: list[dict[str, Any]] = [
        {"latestRevision": True, "percent": 90},
        {"revisionName": "iris-00001", "percent": 10, "tag": "old"},
    ]
    spec = service_spec(ksvc(named, traffic))
    assert (spec.revision, spec.named) == ("iris-blue", True)
    assert [(t.revision, t.latest) for t in spec.traffic] == [
        ("iris-blue", True),
        ("iris-00001", False),
    ]
    assert service_spec(ksvc(TEMPLATE)).named is False


def test_traffic_keeps_named_revisions_and_the_latest_ready_one() -> None:
    spec = service_spec(
        ksvc(
            TEMPLATE,
            [
                {"latestRevision": True, "percent": 50},
                {"revisionName": "iris-00001", "percent": 50},
            ],
        )
    )
    assert routed(spec.traffic, "iris-00003", "iris-00004") == {"iris-00003", "iris-00001"}
    assert routed(spec.traffic, None, "iris-00004") == {"iris-00004", "iris-00001"}


def test_latest_revision_traffic_and_its_tag_go_to_the_newest_ready_revision() -> None:
    resource = ksvc(
        TEMPLATE,
        [
            {"latestRevision": True, "percent": 100, "tag": "latest"},
            {"revisionName": "iris-00001", "percent": 0, "tag": "first"},
        ],
    )
    ready: dict[str, str] = {}
    table = RouteTable.build([resource], {}, random.Random(1), latest_ready=ready.get)

    def revision(headers: dict[str, str]) -> str:
        return table.decide("localhost", "/iris/predict", headers).target.revision

    assert revision({}) == "iris-00001"  # none ready yet: the template's
    ready["iris"] = "iris-00002"
    assert revision({}) == "iris-00002"
    assert revision({"knative-serving-tag": "latest"}) == "iris-00002"
    assert revision({"knative-serving-tag": "first"}) == "iris-00001"


def write_services(folder: Path, models: dict[str, str]) -> None:
    """A kustomization of one Service per entry of ``models`` (name -> its MODEL_NAME)."""
    for name, model in models.items():
        doc = ksvc(copy.deepcopy(TEMPLATE)).doc
        doc["metadata"]["name"] = name
        doc["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = model
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    kustomization = {"resources": [f"{name}.yaml" for name in models]}
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))


def test_reload_makes_the_next_revision_and_drains_what_lost_its_traffic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The launcher's bookkeeping, before any process starts (``start`` is not called)."""
    write_services(tmp_path, {"a": "iris-svc", "b": "iris-svc"})
    launcher = Launcher(tmp_path, {})
    first = dict(launcher.revisions)
    assert {n: r.spec.revision for n, r in first.items()} == {"a": "a-00001", "b": "b-00001"}
    launcher.reload()  # nothing changed: no revision
    assert launcher.revisions == first
    write_services(tmp_path, {"a": "iris-rf", "c": "iris-svc"})
    launcher.reload()
    assert launcher.revisions["a"].spec.revision == "a-00002"
    assert launcher.revisions["c"].spec.revision == "c-00001"
    assert "b" not in launcher.revisions
    assert launcher.latest_ready("a") == "a-00002"  # none was ready: the newest
    assert launcher.latest_ready("b") is None
    # a-00001 was never ready and no traffic points at it; b's Service is gone
    poll_until(
        lambda: set(launcher.all_revisions) == {"a-00002", "c-00001"}, 10, "a-00001, b drained"
    )
    assert first["a"].stopped
    assert first["b"].stopped
    launcher.stop()
    log = capsys.readouterr().out
    assert "a + revision a-00002: its template changed (from a-00001)" in log
    assert "c + revision c-00001: a new Service" in log
    assert "b - revision b-00001 drains: its Service was removed" in log
