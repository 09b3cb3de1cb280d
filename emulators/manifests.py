"""Read the manifests the cluster would get: the kustomization's resources, namespace applied.

The emulators and the manifest tests share this reader, so what runs locally is exactly what
``kubectl apply -k`` would create (for the subset of kustomize this project uses: a
``resources`` list of files or folders with their own kustomization, and ``namespace``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from emulators.revisions import template_hash

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
KNATIVE_SERVICE = ("serving.knative.dev/v1", "Service")
# Kinds kustomize leaves without a namespace.
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass", "Node",
}  # fmt: skip


@dataclass(frozen=True)
class Resource:
    """One Kubernetes object and the file it came from."""

    doc: dict[str, Any]
    path: Path

    @property
    def key(self) -> tuple[str, str]:
        return self.doc.get("apiVersion", ""), self.doc.get("kind", "")

    @property
    def name(self) -> str:
        metadata = self.doc.get("metadata")
        return str(metadata.get("name", "")) if isinstance(metadata, dict) else ""


def load_kustomization(folder: Path) -> list[Resource]:
    """Every object listed by ``folder/kustomization.yaml``, recursively, with its namespace."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    namespace = kustomization.get("namespace")
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = folder / entry
        if path.is_dir():
            resources.extend(load_kustomization(path))
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                resources.append(Resource(doc, path))
    if namespace:
        for resource in resources:
            if resource.doc.get("kind") not in CLUSTER_SCOPED:
                resource.doc.setdefault("metadata", {})["namespace"] = namespace
    return resources


@dataclass(frozen=True)
class TrafficTarget:
    """One entry of a Knative Service's ``traffic`` block, its revision resolved."""

    revision: str
    percent: int
    tag: str | None
    latest: bool = False  # latestRevision: true (revision: the template's, until resolved)


@dataclass(frozen=True)
class ServiceSpec:
    """A Knative Service as the emulators use it, read once from its manifest: its latest
    revision's process (the launcher) and its traffic (the gateway)."""

    name: str
    namespace: str
    revision: str
    env: dict[str, str]
    readiness_path: str
    container_concurrency: int
    timeout_seconds: int
    annotations: dict[str, str] = field(default_factory=dict)
    traffic: tuple[TrafficTarget, ...] = ()
    cluster_local: bool = False  # labelled networking.knative.dev/visibility: cluster-local
    template_hash: str = ""  # what tells one revision's template from the next
    named: bool = False  # the template names its revision (metadata.name)

    def injected_env(self, port: int) -> dict[str, str]:
        """What Knative Serving adds to the container's env (the runtime contract)."""
        return {
            "PORT": str(port),
            "K_SERVICE": self.name,
            "K_REVISION": self.revision,
            "K_CONFIGURATION": self.name,
        }


VISIBILITY_LABEL = "networking.knative.dev/visibility"


def service_spec(resource: Resource) -> ServiceSpec:
    """The ServiceSpec of one Knative Service resource."""
    meta, template = resource.doc["metadata"], resource.doc["spec"]["template"]
    container = template["spec"]["containers"][0]
    probe = container.get("readinessProbe", {}).get("httpGet", {})
    # Knative names the first revision <service>-00001 unless the template does.
    named = template.get("metadata", {}).get("name")
    latest = named or f"{meta['name']}-00001"
    traffic = resource.doc["spec"].get("traffic") or [{"latestRevision": True, "percent": 100}]
    return ServiceSpec(
        name=meta["name"],
        namespace=meta.get("namespace", "default"),
        revision=latest,
        # A value from a Secret (valueFrom) is the platform's to hand over (make dev passes
        # API_TOKEN in the environment): blank here, it would override that.
        env={
            e["name"]: str(e.get("value", ""))
            for e in container.get("env", [])
            if "valueFrom" not in e
        },
        readiness_path=probe.get("path", "/"),
        container_concurrency=int(template["spec"].get("containerConcurrency", 0)),
        timeout_seconds=int(template["spec"].get("timeoutSeconds", 300)),
        annotations=template.get("metadata", {}).get("annotations", {}),
        cluster_local=meta.get("labels", {}).get(VISIBILITY_LABEL) == "cluster-local",
        traffic=tuple(_target(entry, latest) for entry in traffic),
        template_hash=template_hash(template),
        named=named is not None,
    )


def _target(entry: dict[str, Any], latest: str) -> TrafficTarget:
    follows = bool(entry.get("latestRevision", "revisionName" not in entry))
    return TrafficTarget(
        latest if follows else entry["revisionName"],
        int(entry.get("percent", 0)),
        entry.get("tag"),
        follows,
    )


def knative_services(resources: list[Resource]) -> list[ServiceSpec]:
    return [service_spec(r) for r in resources if r.key == KNATIVE_SERVICE]


def _mtimes(folders: Sequence[Path]) -> dict[Path, float]:
    files = [p for folder in folders if folder.is_dir() for p in folder.rglob("*.yaml")]
    return {p: p.stat().st_mtime for p in files if p.is_file()}


def watch(
    folders: Sequence[Path], on_change: Sequence[Callable[[], None]], poll: float = 0.5
) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp cleanup context that polls the manifests and calls ``on_change`` on edits,
    as ``kubectl apply`` would change a cluster; a file that does not load keeps the old state."""

    async def loop() -> None:
        stamp = _mtimes(folders)
        while True:
            await asyncio.sleep(poll)
            if (now := _mtimes(folders)) == stamp:
                continue
            stamp = now
            for callback in on_change:
                try:
                    callback()
                    logger.info(
                        "manifests changed: %s reloaded",
                        getattr(callback, "__qualname__", callback),
                    )
                except Exception as e:  # a half-saved file must not take the platform down
                    logger.warning(
                        "manifests changed but do not load (%s); keeping the old state", e
                    )

    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(loop())
        yield
        task.cancel()

    return context
