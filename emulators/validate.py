"""Offline validation of every Kubernetes manifest the project ships: no cluster, no kubectl.

    python -m emulators.validate [FOLDER ...]   # default: knative/, eventing/ when it exists

Every resource a kustomization lists is checked three ways:

1. **schema**: the pinned upstream CRD schema for its apiVersion and kind, vendored in
   ``emulators/schemas`` (its README names each file's release and licence; ``SCHEMA_DIR``
   points elsewhere), made strict on a copy so that an unknown field
   (a typo) is an error: ``additionalProperties: false`` wherever an object lists its
   properties and does not preserve unknown fields. ``nullable`` admits null,
   ``x-kubernetes-int-or-string`` an int or a string, and Istio's one kind of CEL rule,
   ``duration(self) >= duration('1ms')``, is checked as a Go duration;
2. **generic**: what the API server checks of every object: apiVersion, kind, a valid name,
   the namespace a namespaced object needs (one for all), known metadata fields, valid labels,
   no object twice;
3. **semantic**: the rules of Knative's and Istio's webhooks (``emulators.knative_rules``).

A kind with no pinned schema (v1 Namespace, apps/v1 Deployment, ...) gets 2 only and is
listed as validated without schema, never skipped silently. ``validate_skaffold`` checks
``skaffold.yaml`` against the skaffold JSON schema of its apiVersion.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import yaml
from pydantic import Field
from pydantic_settings import BaseSettings

from emulators.durations import go_duration
from emulators.knative_rules import (
    Finding,
    dns1035_label,
    dns1123_label,
    dns1123_subdomain,
    json_path,
    semantic_findings,
)
from emulators.manifests import (
    CLUSTER_SCOPED,
    KNATIVE_SERVICE,
    REPO_ROOT,
    Resource,
    load_kustomization,
)

Key = tuple[str, str]  # (apiVersion, kind)
NAMESPACE: Key = ("v1", "Namespace")
KSVC: Key = KNATIVE_SERVICE
PRESERVE = "x-kubernetes-preserve-unknown-fields"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# How names are checked, by (group, kind); any other kind's name is a DNS-1123 subdomain.
NAME_RULES: dict[tuple[str, str], tuple[Callable[[str], bool], str]] = {
    ("", "Service"): (dns1035_label, "DNS-1035 label (a-z, 0-9, -; <= 63)"),
    ("serving.knative.dev", "Service"): (dns1035_label, "DNS-1035 label (a-z, 0-9, -; <= 63)"),
    ("", "Namespace"): (dns1123_label, "DNS-1123 label (a-z, 0-9, -; <= 63)"),
}
METADATA_FIELDS = {"name", "generateName", "namespace", "labels", "annotations", "finalizers"}
METADATA_FIELDS |= {"ownerReferences", "uid", "resourceVersion", "generation", "creationTimestamp"}
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")  # label value, key's name part


SCHEMAS = Path(__file__).with_name("schemas")  # vendored: a clone needs nothing beside it


class ValidateSettings(BaseSettings):
    """Where the pinned schemas are: ``SCHEMA_DIR``, by default the vendored copy."""

    schema_dir: Path = Field(SCHEMAS, description="the pinned CRD and skaffold schemas (README)")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one resource: where it is and what is wrong."""

    file: Path
    kind: str
    name: str
    path: str
    message: str

    def __str__(self) -> str:
        file = (
            self.file.relative_to(REPO_ROOT) if self.file.is_relative_to(REPO_ROOT) else self.file
        )
        return f"{file}: {self.kind}/{self.name or '<no name>'}: {self.path or '.'}: {self.message}"


# -- schemas ---------------------------------------------------------------------------------


def strictify(schema: Any) -> Any:
    """A copy of an OpenAPI v3 CRD schema that refuses unknown fields (see the module doc)."""
    if isinstance(schema, list):
        return [strictify(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: strictify(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "anyOf", "oneOf", "allOf"):
            out[key] = strictify(value)
        else:
            out[key] = value
    if "properties" in out and not out.get(PRESERVE):
        out.setdefault("additionalProperties", False)
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if out.get("x-kubernetes-int-or-string") and "type" not in out and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def _cel_durations(validator: Any, rules: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """Istio's ``duration(self) >= duration('1ms')``; other CEL rules are not evaluated."""
    for rule in rules if isinstance(instance, str) else ():
        text = rule.get("rule", "")
        if not text.startswith("duration(self) >= duration('"):
            continue
        bound = text.split("'")[1]
        minimum, seconds = go_duration(bound), go_duration(instance)
        if seconds is None or minimum is None or seconds < minimum:
            yield jsonschema.ValidationError(f"{instance!r} is not a Go duration >= {bound}")


CrdValidator = jsonschema.validators.extend(
    jsonschema.Draft7Validator, {"x-kubernetes-validations": _cel_durations}
)


class SchemaIndex:
    """Every CRD under ``schemas/`` by (apiVersion, kind), and skaffold's by apiVersion."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._schemas: dict[Key, dict[str, Any]] = {}
        self._namespaced: dict[Key, bool] = {}
        for path in sorted(root.glob("*/*.yaml")):
            for doc in yaml.load_all(path.read_text(), Loader=_LOADER):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    self._add(doc["spec"])
        if not self._schemas:
            raise FileNotFoundError(f"no CRD schemas under {root} (SCHEMA_DIR, --schema-dir)")
        self._validators: dict[Key, Any] = {}
        self.skaffold = {f"skaffold/{p.stem}": p for p in sorted(root.glob("skaffold/*.json"))}

    def _add(self, crd: dict[str, Any]) -> None:
        for version in crd["versions"]:
            key = (f"{crd['group']}/{version['name']}", crd["names"]["kind"])
            self._schemas[key] = version["schema"]["openAPIV3Schema"]
            self._namespaced[key] = crd.get("scope", "Namespaced") == "Namespaced"

    def known_kind(self, key: Key) -> bool:
        """Whether some version of this group and kind has a schema."""
        group = key[0].rpartition("/")[0]
        return any(k[1] == key[1] and k[0].rpartition("/")[0] == group for k in self._schemas)

    def namespaced(self, key: Key) -> bool:
        return self._namespaced.get(key, key[1] not in CLUSTER_SCOPED)

    def validator(self, key: Key) -> Any | None:
        """A strict validator for this kind (built once), or None where no schema is pinned."""
        if key not in self._schemas:
            return None
        if key not in self._validators:
            schema = dict(self._schemas[key])
            top = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}}
            schema["properties"] = {**top, "metadata": {"type": "object"}, **schema["properties"]}
            self._validators[key] = CrdValidator(strictify(schema))
        return self._validators[key]


@functools.cache
def default_index() -> SchemaIndex:
    return SchemaIndex(ValidateSettings().schema_dir)


def schema_findings(validator: Any, instance: Any) -> Iterator[Finding]:
    for error in sorted(validator.iter_errors(instance), key=lambda e: str(list(e.path))):
        yield from _leaf_findings(error)


def _leaf_findings(error: Any) -> Iterator[Finding]:
    at = json_path("", *error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = list(error.schema.get("properties", {}))
        for key in (
            error.instance.keys() - set(known) - set(error.schema.get("patternProperties", {}))
        ):
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            yield json_path("", *error.absolute_path, key), f"unknown field {key!r}{hint}"
    elif error.validator in ("anyOf", "oneOf") and len(error.validator_value) == 1:
        for inner in error.context:
            yield from _leaf_findings(inner)
    else:
        message = error.message
        yield at, message if len(message) <= 200 else message[:197] + "..."


# -- generic rules ---------------------------------------------------------------------------


def generic_findings(doc: dict[str, Any], namespaced: bool) -> Iterator[Finding]:
    """What the API server checks of every object, whatever its kind."""
    for field in ("apiVersion", "kind"):
        if not isinstance(doc.get(field), str) or not doc[field]:
            yield field, "required"
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        yield "metadata", "required"
        return
    for key in meta.keys() - METADATA_FIELDS:
        yield json_path("metadata", key), f"unknown metadata field {key!r}"
    name, namespace = meta.get("name"), meta.get("namespace")
    group = str(doc.get("apiVersion", "")).rpartition("/")[0]
    if not isinstance(name, str) or not name:
        yield "metadata.name", "required"
    else:
        valid, what = NAME_RULES.get((group, str(doc.get("kind"))), (dns1123_subdomain, ""))
        if not valid(name):
            yield "metadata.name", f"{name!r} is not a {what or 'DNS-1123 subdomain'}"
    if namespaced and not namespace:
        yield "metadata.namespace", "required (the kustomization sets it)"
    elif namespaced and not dns1123_label(str(namespace)):
        yield "metadata.namespace", f"{namespace!r} is not a DNS-1123 label"
    elif not namespaced and namespace:
        yield "metadata.namespace", f"{doc.get('kind')} is not namespaced"
    yield from _label_findings(meta.get("labels"), values=True)
    yield from _label_findings(meta.get("annotations"), values=False)


def _qualified_name(key: str) -> bool:
    """``[prefix/]name`` of a label or annotation key; a label value is a bare name."""
    prefix, _, name = key.rpartition("/")
    valid = len(name) <= 63 and _NAME.fullmatch(name) is not None
    return valid and (not prefix or dns1123_subdomain(prefix))


def _label_findings(mapping: Any, values: bool) -> Iterator[Finding]:
    where = "metadata.labels" if values else "metadata.annotations"
    if mapping is None:
        return
    if not isinstance(mapping, dict):
        yield where, "not a mapping"
        return
    for key, value in mapping.items():
        if not _qualified_name(str(key)):
            yield json_path(where, str(key)), f"{key!r} is not a valid key"
        if not isinstance(value, str):
            yield json_path(where, str(key)), f"{value!r} is not a string (quote it)"
        elif values and value and (len(value) > 63 or not _qualified_name(value)):
            yield json_path(where, str(key)), f"{value!r} is not a valid label value"


def _namespace(resource: Resource) -> str:
    meta = resource.doc.get("metadata")
    return str(meta.get("namespace", "")) if isinstance(meta, dict) else ""


def _cross_findings(resources: list[Resource], index: SchemaIndex) -> Iterator[Problem]:
    """One namespace for all, the Namespace objects declare it, no object twice, and no
    Kubernetes Service named like a Knative Service (Knative creates one of that name)."""
    namespaced = [r for r in resources if index.namespaced(r.key)]
    namespaces = Counter(_namespace(r) for r in namespaced)
    declared = {r.name for r in resources if r.key == NAMESPACE}
    common = namespaces.most_common(1)[0][0] if namespaces else ""
    seen: set[tuple[str, str, str, str]] = set()
    knative = {(_namespace(r), r.name) for r in resources if r.key == KSVC}
    for resource in resources:
        namespace = _namespace(resource)
        if index.namespaced(resource.key) and namespace != common:
            message = f"{namespace!r}, but the others are in {common!r}"
            yield _problem(resource, ("metadata.namespace", message))
        elif index.namespaced(resource.key) and declared and namespace not in declared:
            message = f"no Namespace {namespace!r} is listed"
            yield _problem(resource, ("metadata.namespace", message))
        group = resource.key[0].rpartition("/")[0]  # any version of a kind is the same object
        identity = (group, resource.key[1], namespace, resource.name)
        if identity in seen:
            yield _problem(resource, ("metadata.name", "a second object of this kind and name"))
        seen.add(identity)
        if resource.key == ("v1", "Service") and (namespace, resource.name) in knative:
            yield _problem(resource, ("metadata.name", "clashes with the Knative Service's own"))


# -- entry points ----------------------------------------------------------------------------


def _problem(resource: Resource, finding: Finding) -> Problem:
    return Problem(resource.path, resource.key[1], resource.name, *finding)


def resource_findings(doc: dict[str, Any], index: SchemaIndex) -> Iterator[Finding]:
    key: Key = (str(doc.get("apiVersion", "")), str(doc.get("kind", "")))
    yield from generic_findings(doc, index.namespaced(key))
    validator = index.validator(key)
    if validator is not None:
        yield from schema_findings(validator, doc)
    elif index.known_kind(key):
        yield "apiVersion", f"{key[0]} {key[1]}: no such version in the pinned CRD"
    yield from semantic_findings(doc)


def validate(resources: Iterable[Resource], index: SchemaIndex | None = None) -> list[Problem]:
    """Every problem of these resources (one kustomization or several together)."""
    index, items = index or default_index(), list(resources)
    problems = [_problem(r, f) for r in items for f in resource_findings(r.doc, index)]
    return problems + list(_cross_findings(items, index))


def without_schema(resources: Iterable[Resource], index: SchemaIndex | None = None) -> list[Key]:
    """The kinds among these resources that got the generic checks only."""
    index = index or default_index()
    return sorted({r.key for r in resources if index.validator(r.key) is None})


def validate_skaffold(path: Path, index: SchemaIndex | None = None) -> list[Problem]:
    """``skaffold.yaml`` (every document in it) against the schema of its apiVersion."""
    index, problems = index or default_index(), []
    for doc in yaml.safe_load_all(path.read_text()):
        version = str(doc.get("apiVersion", "")) if isinstance(doc, dict) else ""
        name = str(doc.get("metadata", {}).get("name", "")) if isinstance(doc, dict) else ""
        schema_path = index.skaffold.get(version)
        if schema_path is None:
            known = ", ".join(index.skaffold)
            problems.append(
                Problem(path, "Config", name, "apiVersion", f"{version!r}: not {known}")
            )
            continue
        validator = _skaffold_validator(schema_path)
        problems += [Problem(path, "Config", name, *f) for f in schema_findings(validator, doc)]
    return problems


@functools.cache
def _skaffold_validator(path: Path) -> Any:
    return jsonschema.Draft7Validator(yaml.safe_load(path.read_text()))


def default_folders() -> list[Path]:
    folders = [REPO_ROOT / "knative", REPO_ROOT / "eventing"]
    return [f for f in folders if (f / "kustomization.yaml").is_file()]


def summary(resources: list[Resource], index: SchemaIndex, folders: list[Path]) -> list[str]:
    """What was validated, by kind, and which kinds had no schema."""
    bare = without_schema(resources, index)
    counts = Counter(r.key for r in resources)
    names = ", ".join(f"{f.name}/" for f in folders)
    lines = [f"{len(resources)} resources valid ({names}; schemas: {index.root}):"]
    for key, n in sorted(counts.items()):
        lines.append(f"  {n:3d}  {key[0]} {key[1]}" + ("  (no schema)" if key in bare else ""))
    if bare:
        lines.append("validated without schema: " + ", ".join(" ".join(k) for k in bare))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, help="folders with a kustomization.yaml")
    parser.add_argument(
        "--schema-dir", type=Path, help="the pinned schemas (default: SCHEMA_DIR, else vendored)"
    )
    args = parser.parse_args(argv)
    try:
        index = SchemaIndex(args.schema_dir or ValidateSettings().schema_dir)
    except FileNotFoundError as e:
        parser.error(str(e))
    folders = args.folders or default_folders()
    resources = [r for folder in folders for r in load_kustomization(folder)]
    problems = validate(resources, index)
    lines = summary(resources, index, folders)
    skaffold = REPO_ROOT / "skaffold.yaml"
    if not args.folders and skaffold.is_file():  # the default run checks skaffold.yaml too
        problems += validate_skaffold(skaffold, index)
        lines.append("skaffold.yaml valid")
    if problems:
        lines = [str(p) for p in problems] + [f"{len(problems)} problems"]
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
