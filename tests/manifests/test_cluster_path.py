"""The cluster path, offline: skaffold.yaml builds the one image and deploys every kustomization
(each profile still valid once applied), and the Make targets in cluster.mk say what is
missing (skaffold, kubectl, a cluster, Knative) before they run anything.

The Make tests put stand-ins for skaffold and kubectl first on PATH: small scripts that
answer the way the real tools do when a cluster is, or is not, there.
"""

from __future__ import annotations

import copy
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulators.manifests import KNATIVE_SERVICE, REPO_ROOT, load_kustomization
from emulators.validate import default_folders, validate_skaffold

SKAFFOLD = REPO_ROOT / "skaffold.yaml"


def config() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(SKAFFOLD.read_text())
    return doc


def apply_patches(doc: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add/replace/remove, the operations skaffold profiles use here."""
    doc = copy.deepcopy(doc)
    for patch in patches:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in patch["path"][1:].split("/")]
        *parents, last = parts
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        key: Any = int(last) if isinstance(target, list) and last != "-" else last
        if patch["op"] == "remove":
            del target[key]
        elif patch["op"] == "add" and isinstance(target, list):
            target.insert(len(target) if key == "-" else key, patch["value"])
        elif patch["op"] in ("add", "replace"):
            target[key] = patch["value"]
        else:
            raise AssertionError(f"patch op {patch['op']!r} is not handled by this test")
    return doc


def test_one_artifact_built_from_the_one_dockerfile() -> None:
    [artifact] = config()["build"]["artifacts"]
    context = REPO_ROOT / artifact.get("context", ".")
    assert context == REPO_ROOT, "the Dockerfile copies functions/, models/ and build/models"
    assert (context / artifact["docker"]["dockerfile"]).is_file()


def test_every_service_runs_the_artifact() -> None:
    [artifact] = config()["build"]["artifacts"]
    images = {
        container["image"]
        for folder in default_folders()
        for resource in load_kustomization(folder)
        if resource.key == KNATIVE_SERVICE
        for container in resource.doc["spec"]["template"]["spec"]["containers"]
    }
    assert images == {artifact["image"]}, "skaffold replaces only its artifact's image name"


def test_every_kustomization_is_deployed_knative_first() -> None:
    paths = config()["manifests"]["kustomize"]["paths"]
    assert [REPO_ROOT / p for p in paths] == default_folders()
    assert paths[0] == "knative", "knative/ creates the namespace the others live in"


@pytest.mark.parametrize("profile", config().get("profiles", []), ids=lambda p: p["name"])
def test_profile_applied_is_still_valid(profile: dict[str, Any], tmp_path: Path) -> None:
    doc = apply_patches(config(), profile.get("patches", []))
    for section in ("build", "manifests", "deploy"):
        if section in profile:  # a profile's section replaces the base's
            doc[section] = {**doc.get(section, {}), **profile[section]}
    doc.pop("profiles")
    path = tmp_path / "skaffold.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert [str(p) for p in validate_skaffold(path)] == []


def test_serving_only_drops_eventing() -> None:
    [profile] = [p for p in config()["profiles"] if p["name"] == "serving-only"]
    doc = apply_patches(config(), profile["patches"])
    assert doc["manifests"]["kustomize"]["paths"] == ["knative"]


# -- cluster.mk ------------------------------------------------------------------------------

KUBECTL = """#!/bin/bash
# kubectl as a cluster answers it; FAKE_CONTEXT empty: no context, FAKE_API=down: no server,
# FAKE_CRDS: the CRDs installed, FAKE_FEATURES: the Serving features enabled.
case "$1 $2" in
  "-n knative-serving")  # get configmap config-features -o jsonpath={.data['<feature>']}
    feature=${7#*\\'}; feature=${feature%\\'*}; feature=${feature//\\\\/}
    case " $FAKE_FEATURES " in *" ${feature:-none} "*) echo enabled ;; esac ;;
  "config current-context") [ -n "$FAKE_CONTEXT" ] && echo "$FAKE_CONTEXT" ;;
  "version --request-timeout=5s") [ "$FAKE_API" != down ] ;;
  "get crd") case " $FAKE_CRDS " in *" $3 "*) ;; *) exit 1 ;; esac ;;
  *) exit 2 ;;
esac
"""
SERVING, EVENTING = "services.serving.knative.dev", "brokers.eventing.knative.dev"


def undeploy(
    tmp_path: Path,
    tools: tuple[str, ...],
    fake: dict[str, str],
    target: str = "undeploy",
    **variables: str,
) -> tuple[int, str]:
    """``make undeploy`` (it builds nothing), or another ``target``, with only the stand-ins
    ``tools`` on PATH."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scripts = {"kubectl": KUBECTL, "skaffold": '#!/bin/sh\necho "skaffold $*"\n'}
    for tool in tools:
        (bin_dir / tool).write_text(scripts[tool])
        (bin_dir / tool).chmod(stat.S_IRWXU)
    result = subprocess.run(
        [make, "-s", "--no-print-directory", target]
        + [f"{name}={value}" for name, value in variables.items()],
        cwd=REPO_ROOT,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path), **fake},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


READY = {"FAKE_CONTEXT": "minikube", "FAKE_CRDS": f"{SERVING} {EVENTING}"}


@pytest.mark.parametrize(
    ("tools", "fake", "message"),
    [
        ((), {}, "skaffold not found on PATH"),
        (("skaffold",), {}, "kubectl not found on PATH"),
        (("skaffold", "kubectl"), {"FAKE_CONTEXT": ""}, "no kube context"),
        (("skaffold", "kubectl"), {**READY, "FAKE_API": "down"}, "no Kubernetes API server"),
        (("skaffold", "kubectl"), {**READY, "FAKE_CRDS": ""}, "Knative Serving is not installed"),
        (("skaffold", "kubectl"), {**READY, "FAKE_CRDS": SERVING}, "Knative Eventing is not"),
        (("skaffold", "kubectl"), {**READY, "FAKE_CONTEXT": "gke_prod"}, "IMAGE_REPO=dev.local"),
    ],
    ids=["skaffold", "kubectl", "context", "api-server", "serving", "eventing", "dev.local"],
)
def test_cluster_targets_say_what_is_missing(
    tmp_path: Path, tools: tuple[str, ...], fake: dict[str, str], message: str
) -> None:
    code, output = undeploy(tmp_path, tools, fake)
    assert code != 0
    assert message in output
    assert "skaffold delete" not in output


def test_cluster_targets_run_skaffold_with_the_image_repository(tmp_path: Path) -> None:
    code, output = undeploy(tmp_path, ("skaffold", "kubectl"), READY)
    assert (code, output.strip()) == (0, "skaffold delete --default-repo=dev.local")
    code, output = undeploy(
        tmp_path,
        ("skaffold", "kubectl"),
        {**READY, "FAKE_CONTEXT": "gke_prod", "FAKE_CRDS": SERVING},
        SKAFFOLD_PROFILES="registry,serving-only",
        IMAGE_REPO="ghcr.io/you",
    )
    assert code == 0, output
    assert output.strip() == "skaffold delete --default-repo=ghcr.io/you -p registry,serving-only"


def test_make_help_lists_the_cluster_targets() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    result = subprocess.run([make, "-s", "help"], cwd=REPO_ROOT, capture_output=True, text=True)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)  # help colours the names
    listed = {line.split()[0] for line in plain.splitlines() if line.strip()}
    assert {"cluster-dev", "deploy", "undeploy", "test-cluster"} <= listed


PVC_FEATURES = (
    "kubernetes.podspec-persistent-volume-claim kubernetes.podspec-persistent-volume-write"
)


@pytest.mark.parametrize("enabled", ["", PVC_FEATURES.split()[0], PVC_FEATURES])
def test_a_deploy_first_checks_the_volume_features(tmp_path: Path, enabled: str) -> None:
    """Without them Serving's webhook refuses prediction-log-dead-letter half-way through."""
    code, output = undeploy(
        tmp_path, ("skaffold", "kubectl"), {**READY, "FAKE_FEATURES": enabled}, "cluster-features"
    )
    if enabled == PVC_FEATURES:
        assert (code, output) == (0, "")
    else:
        assert code != 0
        assert "feature is off: prediction-log-dead-letter mounts its spool" in output
