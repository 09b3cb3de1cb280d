"""Manifests: every resource the project ships is valid, broken ones are caught, and the
manifests agree with the code (function sources, entry points, settings, model cards).

Validation is offline (``emulators.validate``: pinned schemas made strict, generic Kubernetes
rules, Knative/Istio webhook rules). ``eventing/`` joins automatically once it has a
kustomization.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulators.broker import sink_bindings
from emulators.manifests import (
    KNATIVE_SERVICE,
    REPO_ROOT,
    Resource,
    ServiceSpec,
    knative_services,
    load_kustomization,
)
from emulators.oidc import delivered_to
from emulators.validate import (
    Problem,
    SchemaIndex,
    ValidateSettings,
    default_folders,
    default_index,
    main,
    strictify,
    validate,
    validate_skaffold,
    without_schema,
)
from functions.ab_router.settings import AbRouterSettings
from functions.async_worker.settings import AsyncWorkerSettings
from functions.core.event_auth import knative_audience
from functions.core.settings import BaseFunctionSettings, EventAuthSettings, build_settings
from functions.fanout.settings import FanoutSettings
from functions.predict.settings import PredictSettings
from functions.prediction_log.settings import PredictionLogSettings
from functions.sync_async.settings import SyncAsyncSettings

FOLDERS = default_folders()
RESOURCES = [resource for folder in FOLDERS for resource in load_kustomization(folder)]
TRIGGER = ("eventing.knative.dev/v1", "Trigger")
VIRTUAL_SERVICE = ("networking.istio.io/v1", "VirtualService")

# Which Settings class reads the environment of each function source. A Service whose
# FUNCTION_SOURCE is not here fails test_source_has_a_settings_class: add the new function.
SETTINGS_BY_SOURCE: dict[str, type[BaseFunctionSettings]] = {
    "functions/predict/main.py": PredictSettings,
    "functions/prediction_log/main.py": PredictionLogSettings,
    "functions/ab_router/main.py": AbRouterSettings,
    "functions/fanout/main.py": FanoutSettings,
    "functions/sync_async/main.py": SyncAsyncSettings,
    "functions/async_worker/main.py": AsyncWorkerSettings,
}
SERVER_ENV = {"FUNCTION_TARGET", "FUNCTION_SOURCE", "WORKERS", "THREADS", "HOST"}  # core.serve
MODEL_ENV = ("MODEL_NAME", "OUTLIER_MODEL")  # each names a card models/<name>/model.toml
FUNCTIONS = [
    spec
    for spec in knative_services(RESOURCES)
    if {"FUNCTION_TARGET", "FUNCTION_SOURCE"} & spec.env.keys()
]


def resource_id(resource: Resource) -> str:
    return f"{resource.path.relative_to(REPO_ROOT)}:{resource.key[1]}/{resource.name}"


def service_id(spec: ServiceSpec) -> str:
    return spec.name


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return validate(RESOURCES)


# -- what the project ships is valid -----------------------------------------------------


@pytest.mark.parametrize("resource", RESOURCES, ids=resource_id)
def test_resource_is_valid(resource: Resource, problems: list[Problem]) -> None:
    identity = (resource.path, resource.key[1], resource.name)
    assert [str(p) for p in problems if (p.file, p.kind, p.name) == identity] == []


def test_every_kustomization_is_validated() -> None:
    assert REPO_ROOT / "knative" in FOLDERS
    eventing = (REPO_ROOT / "eventing" / "kustomization.yaml").is_file()
    assert (REPO_ROOT / "eventing" in FOLDERS) == eventing
    assert any(r.key == KNATIVE_SERVICE for r in RESOURCES)


def test_skaffold_config_is_valid() -> None:
    path = REPO_ROOT / "skaffold.yaml"
    if not path.is_file():
        pytest.skip("no skaffold.yaml yet")
    assert [str(p) for p in validate_skaffold(path)] == []


# -- kinds without a pinned schema are listed and still checked --------------------------


def test_kinds_without_schema_are_listed() -> None:
    bare = without_schema(RESOURCES)
    assert ("v1", "Namespace") in bare
    index = default_index()
    assert all(index.validator(key) is None for key in bare)
    assert all(index.validator(r.key) is not None for r in RESOURCES if r.key not in bare)


def test_kinds_without_schema_get_the_generic_checks() -> None:
    namespace = copy.deepcopy(next(r.doc for r in RESOURCES if r.key == ("v1", "Namespace")))
    namespace["metadata"]["name"] = "ML_Serving"
    namespace["metadata"]["namespace"] = "default"
    found = findings(namespace)
    assert_found(found, "metadata.name", "not a DNS-1123 label")
    assert_found(found, "metadata.namespace", "Namespace is not namespaced")


def manifest(api_version: str, kind: str, spec: Any, **metadata: Any) -> dict[str, Any]:
    """A resource in the project's namespace, written in a test."""
    metadata = {"namespace": "ml-serving", **metadata}
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec}


def test_deployment_without_name() -> None:
    deployment = manifest("apps/v1", "Deployment", {"replicas": 1}, labels={"app": "redis"})
    assert findings(deployment) == [("metadata.name", "required")]
    assert without_schema([Resource(deployment, Path("redis.yaml"))]) == [("apps/v1", "Deployment")]


def test_one_namespace_no_duplicates_no_clash() -> None:
    services = [copy.deepcopy(r.doc) for r in RESOURCES if r.key == KNATIVE_SERVICE][:2]
    services[1]["metadata"]["namespace"] = "elsewhere"
    twin = copy.deepcopy(services[0])
    name = services[0]["metadata"]["name"]
    kubernetes = manifest("v1", "Service", {"ports": [{"port": 80}]}, name=name)
    found = [
        (p.kind, p.path, p.message)
        for p in validate(Resource(doc, Path("x.yaml")) for doc in [*services, twin, kubernetes])
    ]
    assert found == [
        ("Service", "metadata.namespace", "'elsewhere', but the others are in 'ml-serving'"),
        ("Service", "metadata.name", "a second object of this kind and name"),
        ("Service", "metadata.name", "clashes with the Knative Service's own"),
    ]


def test_cli_prints_a_summary_with_the_kinds_without_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert f"{len(RESOURCES)} resources valid" in out
    assert "validated without schema: " in out
    assert "v1 Namespace" in out.split("validated without schema: ")[1]


def test_cli_fails_on_a_broken_manifest(
    tmp_path: Path, iris: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    iris["spec"]["template"]["spec"]["timeoutSeconds"] = 9999
    (tmp_path / "iris.yaml").write_text(yaml.safe_dump(iris))
    kustomization = {"namespace": "ml-serving", "resources": ["iris.yaml"]}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    assert main([str(tmp_path)]) == 1
    assert "Service/iris: spec.template.spec.timeoutSeconds: 9999" in capsys.readouterr().out


def test_schema_dir_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHEMA_DIR", str(tmp_path))
    assert ValidateSettings().schema_dir == tmp_path
    with pytest.raises(FileNotFoundError, match="SCHEMA_DIR"):
        SchemaIndex(tmp_path)


# -- broken manifests are caught ---------------------------------------------------------


def findings(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in validate([Resource(doc, Path("broken.yaml"))])]


def assert_found(found: list[tuple[str, str]], path: str, fragment: str) -> None:
    assert any(p == path and fragment in m for p, m in found), f"{path}: {fragment!r} in {found}"


@pytest.fixture
def iris() -> dict[str, Any]:
    """A real Service from knative/services, deep-copied, with no problem to begin with."""
    doc = copy.deepcopy(next(r.doc for r in RESOURCES if r.path.name == "iris.yaml"))
    assert findings(doc) == []
    return doc


def container(doc: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
    return result


def template_annotations(doc: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = doc["spec"]["template"]["metadata"].setdefault("annotations", {})
    return result


def test_typo_in_a_field(iris: dict[str, Any]) -> None:
    iris["spec"]["template"]["spec"]["containerConcurency"] = 4
    assert findings(iris) == [
        (
            "spec.template.spec.containerConcurency",
            "unknown field 'containerConcurency' (did you mean 'containerConcurrency'?)",
        )
    ]


def test_traffic_percents_must_sum_to_100(iris: dict[str, Any]) -> None:
    iris["spec"]["traffic"] = [
        {"latestRevision": True, "percent": 60},
        {"revisionName": "iris-00001", "percent": 30, "tag": "previous"},
    ]
    assert findings(iris) == [("spec.traffic", "traffic percents sum to 90, want 100")]


def test_traffic_tags_and_latest_revision(iris: dict[str, Any]) -> None:
    iris["spec"]["traffic"] = [
        {"latestRevision": True, "revisionName": "iris-00002", "percent": 50, "tag": "a"},
        {"revisionName": "iris-00001", "percent": 50, "tag": "a"},
        {"revisionName": "iris-00001", "percent": 0, "tag": "Not_DNS"},
    ]
    found = findings(iris)
    assert_found(found, "spec.traffic[0]", "latestRevision: true conflicts with revisionName")
    assert_found(found, "spec.traffic[1].tag", "tag 'a' is used twice")
    assert_found(found, "spec.traffic[2].tag", "not a DNS-1035 label")


def test_reserved_env_var(iris: dict[str, Any]) -> None:
    container(iris)["env"].append({"name": "PORT", "value": "9000"})
    index = len(container(iris)["env"]) - 1
    path = f"spec.template.spec.containers[0].env[{index}].name"
    assert findings(iris) == [(path, "PORT is reserved: Knative sets it")]


def test_reserved_port(iris: dict[str, Any]) -> None:
    container(iris)["ports"] = [{"name": "http1", "containerPort": 8012}]
    path = "spec.template.spec.containers[0].ports[0].containerPort"
    assert findings(iris) == [(path, "8012 is reserved by Knative")]


def test_two_ports(iris: dict[str, Any]) -> None:
    container(iris)["ports"].append({"name": "h2c", "containerPort": 9000})
    path = "spec.template.spec.containers[0].ports"
    assert findings(iris) == [(path, "2 ports: a Knative container has at most one")]


def test_negative_min_scale(iris: dict[str, Any]) -> None:
    template_annotations(iris)["autoscaling.knative.dev/min-scale"] = "-1"
    path = "spec.template.metadata.annotations['autoscaling.knative.dev/min-scale']"
    assert findings(iris) == [(path, "'-1' is not an integer >= 0")]


def test_min_scale_above_max_scale(iris: dict[str, Any]) -> None:
    template_annotations(iris)["autoscaling.knative.dev/min-scale"] = "20"
    template_annotations(iris)["autoscaling.knative.dev/max-scale"] = "10"
    path = "spec.template.metadata.annotations['autoscaling.knative.dev/max-scale']"
    assert findings(iris) == [(path, "max-scale 10 is below min-scale 20")]


def test_other_autoscaling_annotations(iris: dict[str, Any]) -> None:
    for key, value in {
        "class": "kpa",
        "metric": "latency",
        "target": "0",
        "target-utilization-percentage": "120",
        "initial-scale": "0",
        "window": "2s",
        "scale-down-delay": "1.5s",
        "minscale": "1",
    }.items():
        template_annotations(iris)["autoscaling.knative.dev/" + key] = value
    assert {p.rsplit("/", 1)[1].rstrip("']") for p, _ in findings(iris)} == {
        "class",
        "target",
        "target-utilization-percentage",
        "initial-scale",
        "window",
        "scale-down-delay",
        "minscale",
    }  # metric is not judged while the class itself is wrong


def test_timeout_seconds_out_of_bounds(iris: dict[str, Any]) -> None:
    iris["spec"]["template"]["spec"]["timeoutSeconds"] = 9999
    assert findings(iris) == [("spec.template.spec.timeoutSeconds", "9999 is not in [1, 600]")]


def test_container_concurrency_out_of_bounds(iris: dict[str, Any]) -> None:
    iris["spec"]["template"]["spec"]["containerConcurrency"] = 1001
    assert findings(iris) == [
        ("spec.template.spec.containerConcurrency", "1001 is not in [0, 1000]")
    ]


def test_service_name_is_a_dns_1035_label(iris: dict[str, Any]) -> None:
    iris["metadata"]["name"] = "a" * 64
    assert_found(findings(iris), "metadata.name", "is not a DNS-1035 label")


def first_or(key: tuple[str, str], typical: dict[str, Any]) -> dict[str, Any]:
    """A copy of the project's first resource of kind ``key``, or ``typical`` while it has
    none; valid either way."""
    doc = copy.deepcopy(next((r.doc for r in RESOURCES if r.key == key), None) or typical)
    assert findings(doc) == []
    return doc


@pytest.fixture
def trigger() -> dict[str, Any]:
    """The project's first Trigger once eventing/ has one; until then a typical one."""
    subscriber = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "log"}
    spec = {
        "broker": "default",
        "filters": [{"exact": {"type": "dev.mlserving.prediction.logged.v1"}}],
        "subscriber": {"ref": subscriber},
        "delivery": {"retry": 3, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"},
    }
    return first_or(TRIGGER, manifest(*TRIGGER, spec, name="prediction-log"))


def test_trigger_filter_with_two_dialects(trigger: dict[str, Any]) -> None:
    trigger["spec"]["filters"] = [
        {"exact": {"type": "dev.mlserving.prediction.logged.v1"}, "prefix": {"source": "/f"}}
    ]
    assert_found(findings(trigger), "spec.filters[0]", "(found: exact, prefix)")


def test_trigger_nested_filters(trigger: dict[str, Any]) -> None:
    trigger["spec"]["filters"] = [
        {"all": [{"exact": {"type": "a"}}, {"not": {"suffix": {"type": "b"}, "cesql": "x"}}]}
    ]
    assert_found(findings(trigger), "spec.filters[0].all[1].not", "(found: suffix, cesql)")


def test_trigger_without_subscriber(trigger: dict[str, Any]) -> None:
    del trigger["spec"]["subscriber"]
    assert findings(trigger) == [("spec.subscriber", "needs a ref or a uri")]


def test_trigger_typo_in_spec(trigger: dict[str, Any]) -> None:
    trigger["spec"]["delivry"] = trigger["spec"].pop("delivery", {})
    assert findings(trigger) == [("spec.delivry", "unknown Trigger field 'delivry'")]


def test_trigger_backoff_policy(trigger: dict[str, Any]) -> None:
    trigger["spec"].setdefault("delivery", {})["backoffPolicy"] = "quadratic"
    assert_found(findings(trigger), "spec.delivery.backoffPolicy", "'quadratic' is not one of")


def test_trigger_backoff_delay(trigger: dict[str, Any]) -> None:
    trigger["spec"].setdefault("delivery", {})["backoffDelay"] = "5 seconds"
    assert_found(findings(trigger), "spec.delivery.backoffDelay", "not an ISO-8601 duration")


def test_broker_delivery() -> None:
    delivery = {"retry": -1, "deadLetterSink": {"uri": "/dead-letter"}}
    broker = manifest("eventing.knative.dev/v1", "Broker", {"delivery": delivery}, name="default")
    found = findings(broker)
    assert_found(found, "spec.delivery.retry", "not an integer >= 0")
    assert_found(found, "spec.delivery.deadLetterSink.uri", "not an absolute URL")


def test_sink_binding_needs_subject_and_sink() -> None:
    binding = manifest("sources.knative.dev/v1", "SinkBinding", {}, name="predict")
    assert {path for path, _ in findings(binding)} == {"spec.subject", "spec.sink"}


@pytest.fixture
def virtual_service() -> dict[str, Any]:
    """The project's first VirtualService once knative/ has one; until then a typical one."""
    rule = {
        "match": [{"headers": {"target": {"exact": "mountain"}}}],
        "route": [{"destination": {"host": "plant.ml-serving.svc.cluster.local"}}],
        "timeout": "1.5s",
    }
    spec = {
        "hosts": ["route.ml-serving.example.com"],
        "gateways": ["knative-serving/knative-ingress-gateway"],
        "http": [rule],
    }
    return first_or(VIRTUAL_SERVICE, manifest(*VIRTUAL_SERVICE, spec, name="route"))


def test_virtual_service_weights_and_regex(virtual_service: dict[str, Any]) -> None:
    rule = virtual_service["spec"]["http"][0]
    rule["route"] = [
        {"destination": {"host": "iris-svc"}, "weight": 60},
        {"destination": {"host": "iris-rf"}, "weight": 30},
    ]
    rule["match"] = [{"headers": {"target": {"regex": "mount(ain"}}}]
    found = findings(virtual_service)
    assert_found(found, "spec.http[0].route", "route weights sum to 90, want 100")
    assert_found(found, "spec.http[0].match[0].headers.target.regex", "does not compile")


def test_virtual_service_durations(virtual_service: dict[str, Any]) -> None:
    rule = virtual_service["spec"]["http"][0]
    rule["timeout"] = "1.5 s"
    rule["fault"] = {"delay": {"fixedDelay": "300", "percentage": {"value": 10}}}
    found = findings(virtual_service)
    assert_found(found, "spec.http[0].timeout", "not a Go duration")
    assert_found(found, "spec.http[0].fault.delay.fixedDelay", "not a Go duration")


def test_strictify() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "nullable": True},
            "port": {"x-kubernetes-int-or-string": True},
            "open": {
                "type": "object",
                "properties": {},
                "x-kubernetes-preserve-unknown-fields": True,
            },
        },
    }
    strict = strictify(schema)
    assert strict["additionalProperties"] is False
    assert strict["properties"]["a"]["type"] == ["string", "null"]
    assert strict["properties"]["port"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert "additionalProperties" not in strict["properties"]["open"]
    assert "additionalProperties" not in schema  # the original is left alone


def test_skaffold_schema(tmp_path: Path) -> None:
    config = {
        "apiVersion": "skaffold/v4beta13",
        "kind": "Config",
        "metadata": {"name": "ml-serving-functions"},
        "build": {"artifacts": [{"image": "ml-serving-functions"}]},
        "manifests": {"kustomize": {"paths": ["knative"]}},
    }
    path = tmp_path / "skaffold.yaml"
    path.write_text(yaml.safe_dump(config))
    assert validate_skaffold(path) == []
    config["manifests"] = {"kustomise": {"paths": ["knative"]}}
    config["apiVersion"] = "skaffold/v4beta14"
    path.write_text(yaml.safe_dump(config))
    [problem] = validate_skaffold(path)
    assert (problem.path, problem.message) == (
        "manifests.kustomise",
        "unknown field 'kustomise' (did you mean 'kustomize'?)",
    )
    path.write_text(yaml.safe_dump({**config, "apiVersion": "skaffold/v1"}))
    assert "'skaffold/v1'" in validate_skaffold(path)[0].message


# -- manifests agree with the code -------------------------------------------------------


SOURCE, TARGET = "FUNCTION_SOURCE", "FUNCTION_TARGET"
# Run in a process of its own: importing a main.py registers Flask error handlers, which a
# Flask app that has served requests (the contract tests') refuses.
REGISTERED = """
import importlib.util, json, sys
from functions_framework import _function_registry
found = {}
for source, target in json.loads(sys.argv[1]):
    spec = importlib.util.spec_from_file_location("_target", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found[f"{source}:{target}"] = callable(getattr(module, target, None)) and (
        _function_registry.REGISTRY_MAP.get(target) == "http")
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def registered() -> dict[str, bool]:
    """For every manifest's FUNCTION_SOURCE:FUNCTION_TARGET, whether functions-framework
    finds an HTTP function there (importing a main.py builds nothing: its service is built
    on first use)."""
    pairs = sorted(
        {(str(REPO_ROOT / spec.env[SOURCE]), spec.env[TARGET]) for spec in FUNCTIONS
         if spec.env.get(SOURCE) and spec.env.get(TARGET) and (REPO_ROOT / spec.env[SOURCE]).is_file()}
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", REGISTERED, json.dumps(pairs)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, check=True,
    )  # fmt: skip
    return {k: bool(v) for k, v in json.loads(done.stdout).items()}


@pytest.mark.parametrize("spec", FUNCTIONS, ids=service_id)
def test_source_defines_an_http_target(spec: ServiceSpec, registered: dict[str, bool]) -> None:
    target, source = spec.env.get(TARGET), spec.env.get(SOURCE)
    assert target, "FUNCTION_SOURCE without FUNCTION_TARGET"
    assert source, "FUNCTION_TARGET without FUNCTION_SOURCE"
    path = REPO_ROOT / source
    assert path.is_file(), f"FUNCTION_SOURCE={source}: no such file"
    assert registered[f"{path}:{target}"], (
        f"{source} has no function {target} registered with functions_framework.http"
    )


@pytest.mark.parametrize("spec", FUNCTIONS, ids=service_id)
def test_source_has_a_settings_class(spec: ServiceSpec) -> None:
    source = spec.env.get("FUNCTION_SOURCE")
    assert source in SETTINGS_BY_SOURCE, f"{source}: add its Settings class to SETTINGS_BY_SOURCE"


def settings_env_names(settings: type[BaseFunctionSettings]) -> set[str]:
    prefix = str(settings.model_config.get("env_prefix", ""))
    return {(prefix + name).upper() for name in settings.model_fields}


@pytest.mark.parametrize("spec", FUNCTIONS, ids=service_id)
def test_env_names_are_settings(spec: ServiceSpec) -> None:
    settings = SETTINGS_BY_SOURCE.get(spec.env.get("FUNCTION_SOURCE", ""))
    if settings is None:
        pytest.fail("no Settings class (see test_source_has_a_settings_class)")
    unknown = spec.env.keys() - settings_env_names(settings) - SERVER_ENV
    assert not unknown, f"not fields of {settings.__name__} nor server variables: {unknown}"


def test_env_from_secrets_names_settings() -> None:
    """An env var from a Secret (valueFrom.secretKeyRef: API_TOKEN) is not in ServiceSpec.env,
    which the platform fills: its name must still be a setting of the function."""
    from_secrets = 0
    for resource in (r for r in RESOURCES if r.key == KNATIVE_SERVICE):
        env = resource.doc["spec"]["template"]["spec"]["containers"][0].get("env", [])
        source = next((e.get("value") for e in env if e["name"] == "FUNCTION_SOURCE"), "")
        for var in (e for e in env if "secretKeyRef" in e.get("valueFrom", {})):
            from_secrets += 1
            assert var["name"] in settings_env_names(SETTINGS_BY_SOURCE[source]), resource.name
    assert from_secrets >= 1  # prediction-log's API_TOKEN


@pytest.mark.parametrize("spec", FUNCTIONS, ids=service_id)
def test_what_the_platform_hands_a_service_is_read(spec: ServiceSpec) -> None:
    """Knative's names, the cluster-local gateway (make dev sets it for every Service) and
    the K_SINK of a SinkBinding are settings of the function: one it had no field for would
    be ignored, not refused."""
    settings = SETTINGS_BY_SOURCE.get(spec.env.get("FUNCTION_SOURCE", ""))
    if settings is None:
        pytest.fail("no Settings class (see test_source_has_a_settings_class)")
    handed = {"K_SERVICE", "K_REVISION", "CLUSTER_LOCAL_GATEWAY"}
    if spec.name in sink_bindings(RESOURCES, lambda destination: "http://broker"):
        handed.add("K_SINK")
    assert handed <= settings_env_names(settings), settings.__name__


@pytest.mark.parametrize("spec", FUNCTIONS, ids=service_id)
def test_env_values_are_accepted(spec: ServiceSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = SETTINGS_BY_SOURCE.get(spec.env.get("FUNCTION_SOURCE", ""))
    if settings is None:
        pytest.fail("no Settings class (see test_source_has_a_settings_class)")
    for name in settings_env_names(settings):
        monkeypatch.delenv(name, raising=False)
    for name, value in spec.env.items():
        monkeypatch.setenv(name, value)
    build_settings(settings)  # raises SettingsError naming the variable


@pytest.mark.parametrize("spec", FUNCTIONS, ids=service_id)
def test_model_cards_exist(spec: ServiceSpec) -> None:
    for variable in MODEL_ENV:
        if variable in spec.env:
            card = REPO_ROOT / "models" / spec.env[variable] / "model.toml"
            assert card.is_file(), f"{variable}={spec.env[variable]}: no {card}"


def test_every_trigger_retries_then_dead_letters() -> None:
    """What runs out of retries goes somewhere, never nowhere (the log's Trigger had none)."""
    triggers = [r for r in RESOURCES if r.key == TRIGGER]
    assert triggers
    for trigger in triggers:
        delivery = trigger.doc["spec"].get("delivery", {})
        assert "deadLetterSink" in delivery, trigger.name
        assert delivery.get("retry", 0) >= 5, trigger.name


def destinations() -> list[tuple[str, dict[str, Any], str]]:
    """(Trigger, destination, its namespace) for every subscriber and dead-letter sink."""
    found = []
    for trigger in (r for r in RESOURCES if r.key == TRIGGER):
        spec, namespace = trigger.doc["spec"], trigger.doc["metadata"]["namespace"]
        for destination in (spec["subscriber"], spec.get("delivery", {}).get("deadLetterSink")):
            if destination is not None:
                found.append((trigger.name, destination, namespace))
    return found


def test_every_service_the_broker_delivers_to_is_named_by_its_audience(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With authentication-oidc on, a Knative Service (which announces no audience) gets a
    token only where its Trigger names the audience, and takes it only if that is the
    audience it checks (EVENT_AUDIENCE, else its Knative one)."""
    specs = {spec.name: spec for spec in FUNCTIONS}
    checked = 0
    for trigger, destination, namespace in destinations():
        ref = destination.get("ref", {})
        if (ref.get("apiVersion"), ref.get("kind")) != KNATIVE_SERVICE:
            continue
        service = specs[ref["name"]]
        settings = SETTINGS_BY_SOURCE[service.env["FUNCTION_SOURCE"]]
        assert issubclass(settings, EventAuthSettings), f"{service.name}: no EventAuthSettings"
        for name in settings_env_names(settings):
            monkeypatch.delenv(name, raising=False)
        env = {**service.env, "K_SERVICE": service.name, "POD_NAMESPACE": service.namespace}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        checks = build_settings(settings).audience
        expected = knative_audience(ref["apiVersion"], ref["kind"], namespace, ref["name"])
        assert destination.get("audience") == expected == checks, (trigger, ref["name"])
        checked += 1
    assert checked == 4  # the log's ingest and dead letters, the worker's two


def test_event_auth_is_off_in_the_manifests_until_the_cluster_has_oidc() -> None:
    """Off by default, said in each Service (docs/cluster.md turns it on with a patch)."""
    specs = {spec.name: spec for spec in FUNCTIONS}
    for name in delivered_to(RESOURCES):
        assert specs[name].env.get("EVENT_AUTH") == "off", name


def json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902's test, replace and add (``-`` appends), as kustomize applies them."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = op["path"].lstrip("/").split("/")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) and last != "-" else last
        if op["op"] == "test":
            assert node[key] == op["value"], op
        elif op["op"] == "replace":
            node[key] = op["value"]
        elif op["op"] == "add" and key == "-":
            node.append(op["value"])
        else:
            raise AssertionError(f"not handled here: {op}")
    return doc


def test_the_documented_patch_turns_event_auth_on_in_every_subscriber(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """knative/patches/event-auth-oidc.yaml (docs/cluster.md) applies to each Service the
    broker delivers to, leaves it valid, and its settings then verify."""
    text = (REPO_ROOT / "knative" / "patches" / "event-auth-oidc.yaml").read_text()
    ops = yaml.safe_load(text)
    targets = set(delivered_to(RESOURCES))
    for told in (text, (REPO_ROOT / "docs" / "cluster.md").read_text()):
        found = re.findall(r"name: ((?:[a-z-]+\|)+[a-z-]+)", told)
        assert any(set(names.split("|")) == targets for names in found), found
    services = {r.name: r for r in RESOURCES if r.key == KNATIVE_SERVICE}
    for name in targets:
        patched = json_patch(services[name].doc, ops)
        assert validate([Resource(patched, services[name].path)]) == [], name
        spec = next(s for s in knative_services([Resource(patched, services[name].path)]))
        settings = SETTINGS_BY_SOURCE[spec.env["FUNCTION_SOURCE"]]
        for variable in settings_env_names(settings):
            monkeypatch.delenv(variable, raising=False)
        for variable, value in spec.env.items():
            monkeypatch.setenv(variable, value)
        built = build_settings(settings)
        assert isinstance(built, EventAuthSettings)
        assert (built.event_auth, built.event_issuer) == (
            "oidc", "https://kubernetes.default.svc.cluster.local"
        )  # fmt: skip
