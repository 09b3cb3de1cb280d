"""Which revision a Knative Service's template is, and which revisions its traffic keeps.

Knative makes a new revision for every change of ``spec.template`` (the Configuration's
generation goes up by one) and names it ``<service>-<generation, 5 digits>`` unless the
template names it (``metadata.name``). What a change is: the template as data, so key
order, YAML layout and comments are not changes. A revision keeps running while a traffic
target points at it: ``revisionName`` names one; ``latestRevision: true`` follows the newest
revision that became ready (the Service's ``latestReadyRevisionName``), so traffic moves to a
new revision only once it is ready.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Protocol


def template_hash(template: Mapping[str, Any]) -> str:
    """A stable digest of ``spec.template``: equal for templates that differ only in layout."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def revision_name(
    service: str, generation: int, named: str | None, taken: Collection[str] = ()
) -> tuple[str, int]:
    """The name of the revision for ``generation`` of ``service``'s template, and the
    generation it took: the template's own name (``named``) where it gives one, else
    ``<service>-0000N``, past any name still ``taken`` (a revision of a removed Service of the
    same name may still be draining)."""
    if named:
        return named, generation
    while (name := f"{service}-{generation:05d}") in taken:
        generation += 1
    return name, generation


class Traffic(Protocol):
    """A traffic target (``manifests.TrafficTarget``)."""

    @property
    def revision(self) -> str: ...

    @property
    def latest(self) -> bool: ...


def routed(traffic: Iterable[Traffic], latest_ready: str | None, newest: str) -> set[str]:
    """The revisions a Service's traffic block points at now: each ``revisionName``, and for
    ``latestRevision`` the newest ready one (``newest`` while none has been ready)."""
    latest = latest_ready or newest
    return {latest if t.latest else t.revision for t in traffic}
