"""The rules Knative's and Istio's admission webhooks enforce and no pinned schema encodes.

Each ``check_*`` takes one manifest (a dict, as YAML gives it) and yields findings: the
JSON path of the offending value and a message. ``emulators.validate`` runs the schemas first,
then ``semantic_findings``; a value of the wrong type is the schema's to report, so these
rules skip it rather than report it twice.

Where a rule comes from: knative/serving ``pkg/apis/serving`` (Service, traffic, containers)
and ``pkg/apis/autoscaling`` (annotations, with the default ``config-autoscaler`` and
``config-defaults``: max timeout 600 s, max containerConcurrency 1000, no zero initial scale);
knative/eventing ``pkg/apis/eventing/v1`` (Trigger filters) and ``pkg/apis/duck/v1``
(Destination, DeliverySpec); Istio ``pkg/config/validation`` (route weights, regexes).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from emulators.durations import go_duration, iso_duration

Finding = tuple[str, str]  # (JSON path, message)

# -- names and paths -------------------------------------------------------------------------

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def dns1123_label(name: str) -> bool:
    return len(name) <= 63 and _DNS1123_LABEL.fullmatch(name) is not None


def dns1035_label(name: str) -> bool:
    return len(name) <= 63 and _DNS1035_LABEL.fullmatch(name) is not None


def dns1123_subdomain(name: str) -> bool:
    return len(name) <= 253 and all(
        _DNS1123_LABEL.fullmatch(part) is not None for part in name.split(".")
    )


def json_path(base: str, *parts: str | int) -> str:
    """``base`` (a path) extended by keys and indices: ``spec.containers[0].env``, ``['a/b']``."""
    out = base
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# -- Knative Serving -------------------------------------------------------------------------

AUTOSCALING = "autoscaling.knative.dev/"
KPA, HPA = "kpa.autoscaling.knative.dev", "hpa.autoscaling.knative.dev"
METRICS = {KPA: ("concurrency", "rps"), HPA: ("cpu", "memory")}
RESERVED_ENV = ("PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION")
RESERVED_PORTS = (8012, 8013, 8022, 9090, 9091)
PORT_NAMES = ("http1", "h2c")
MAX_CONTAINER_CONCURRENCY, MAX_TIMEOUT_SECONDS = 1000, 600
# canonical key -> the older camelCase alias Knative still reads (setting both is an error)
_ALIASES = {
    "min-scale": "minScale",
    "max-scale": "maxScale",
    "initial-scale": "initialScale",
    "scale-down-delay": "scaleDownDelay",
    "target-utilization-percentage": "targetUtilizationPercentage",
    "target-burst-capacity": "targetBurstCapacity",
    "panic-window-percentage": "panicWindowPercentage",
    "panic-threshold-percentage": "panicThresholdPercentage",
    "scale-to-zero-pod-retention-period": "scaleToZeroPodRetentionPeriod",
    "metric-aggregation-algorithm": "metricAggregationAlgorithm",
}
_CANONICAL = {alias: key for key, alias in _ALIASES.items()}
_AUTOSCALING_KEYS = {"class", "metric", "target", "window", "activation-scale", *_ALIASES}
# key -> (minimum, maximum) of the numeric annotations, durations in seconds
_INTS = {"min-scale": 0, "max-scale": 0, "activation-scale": 1}  # key -> minimum
_FLOATS: dict[str, tuple[float, float]] = {
    "target": (0.01, math.inf),
    "target-utilization-percentage": (1, 100),
    "panic-window-percentage": (1, 100),
    "panic-threshold-percentage": (110, 1000),
}
_DURATIONS = {"window": (6, 3600), "scale-down-delay": (0, 3600)}
_DURATIONS |= {"scale-to-zero-pod-retention-period": (0, 3600)}
_INT = re.compile(r"\+?\d+")


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _autoscaling_keys(annotations: dict[str, Any], at: str) -> tuple[dict[str, str], list[Finding]]:
    """The values by canonical key, and findings for unknown or doubly set keys."""
    values: dict[str, str] = {}
    findings: list[Finding] = []
    for key, value in annotations.items():
        if not key.startswith(AUTOSCALING):
            continue
        short = key.removeprefix(AUTOSCALING)
        canonical = _CANONICAL.get(short, short)
        if canonical not in _AUTOSCALING_KEYS:
            findings.append((json_path(at, key), f"unknown autoscaling annotation {key!r}"))
        elif canonical in values:
            findings.append((json_path(at, key), f"sets {canonical!r} a second time (alias)"))
        else:
            values[canonical] = str(value)
    return values, findings


def check_autoscaling(annotations: dict[str, Any], at: str) -> Iterator[Finding]:
    """``autoscaling.knative.dev/*`` annotations, as Knative's ``ValidateAnnotations``."""
    values, findings = _autoscaling_keys(annotations, at)
    yield from findings

    def where(key: str) -> str:
        return json_path(at, AUTOSCALING + key)

    ints: dict[str, int] = {}
    for key, low in _INTS.items():
        if key not in values:
            continue
        if _INT.fullmatch(values[key]) and low <= int(values[key]) < 2**31:
            ints[key] = int(values[key])
        else:
            yield where(key), f"{values[key]!r} is not an integer >= {low}"
    low_scale, high_scale = ints.get("min-scale", 0), ints.get("max-scale", 0)
    if high_scale and low_scale > high_scale:  # max-scale 0 means unbounded
        yield where("max-scale"), f"max-scale {high_scale} is below min-scale {low_scale}"
    initial = values.get("initial-scale", "1")
    if not (_INT.fullmatch(initial) and int(initial) >= 1):
        zero = "0 needs allow-zero-initial-scale in config-autoscaler"
        yield where("initial-scale"), f"{initial!r} is not an integer >= 1 ({zero})"
    for key in _FLOATS.keys() & values.keys():
        bottom, top = _FLOATS[key]
        number = _number(values[key])
        if number is None or not bottom <= number <= top:
            yield where(key), f"{values[key]!r} is not a number in [{bottom}, {top}]"
    for key in _DURATIONS.keys() & values.keys():
        low, high = _DURATIONS[key]
        seconds = go_duration(values[key])
        if seconds is None or not low <= seconds <= high:
            yield where(key), f"{values[key]!r} is not a duration in [{low}s, {high}s] (e.g. 60s)"
        elif key == "scale-down-delay" and seconds != int(seconds):
            yield where(key), f"{values[key]!r} is not whole seconds"
    yield from _check_class_and_metric(values, where)


def _check_class_and_metric(
    values: dict[str, str], where: Callable[[str], str]
) -> Iterator[Finding]:
    autoscaler = values.get("class", KPA)
    if autoscaler not in METRICS:
        yield where("class"), f"{autoscaler!r} is not one of {KPA}, {HPA}"
        return
    if "metric" in values and values["metric"] not in METRICS[autoscaler]:
        allowed = " or ".join(METRICS[autoscaler])
        yield where("metric"), f"{values['metric']!r}: class {autoscaler} scales on {allowed}"
    algorithm = values.get("metric-aggregation-algorithm", "linear")
    if algorithm not in ("linear", "weightedExponential"):
        yield (
            where("metric-aggregation-algorithm"),
            f"{algorithm!r} is not linear or weightedExponential",
        )


def check_service(doc: dict[str, Any]) -> Iterator[Finding]:
    """A ``serving.knative.dev/v1`` Service: its template, annotations and traffic block."""
    meta, spec = _dict(doc.get("metadata")), _dict(doc.get("spec"))
    name = str(meta.get("name", ""))
    yield from check_autoscaling(_dict(meta.get("annotations")), "metadata.annotations")
    yield from _check_template(_dict(spec.get("template")), name)
    yield from _check_traffic(spec.get("traffic"), name)


def _check_template(template: dict[str, Any], service: str) -> Iterator[Finding]:
    meta, spec = _dict(template.get("metadata")), _dict(template.get("spec"))
    revision = meta.get("name")
    if isinstance(revision, str) and not revision.startswith(f"{service}-"):
        yield (
            "spec.template.metadata.name",
            f"revision name {revision!r} must start with {service}-",
        )
    annotations = "spec.template.metadata.annotations"
    yield from check_autoscaling(_dict(meta.get("annotations")), annotations)
    concurrency = _int(spec.get("containerConcurrency"))
    if concurrency is not None and not 0 <= concurrency <= MAX_CONTAINER_CONCURRENCY:
        message = f"{concurrency} is not in [0, {MAX_CONTAINER_CONCURRENCY}]"
        yield "spec.template.spec.containerConcurrency", message
    timeout = _int(spec.get("timeoutSeconds"))
    if timeout is not None and not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        yield "spec.template.spec.timeoutSeconds", f"{timeout} is not in [1, {MAX_TIMEOUT_SECONDS}]"
    containers = _list(spec.get("containers"))
    if not containers:
        yield "spec.template.spec.containers", "a Service needs a container"
    with_ports = [i for i, c in enumerate(containers) if _list(_dict(c).get("ports"))]
    if len(containers) > 1 and len(with_ports) != 1:
        yield "spec.template.spec.containers", "exactly one of several containers must have a port"
    for i, container in enumerate(containers):
        at = json_path("spec.template.spec.containers", i)
        yield from _check_ports(_list(_dict(container).get("ports")), at)
        yield from _check_env(_list(_dict(container).get("env")), at)


def _check_ports(ports: list[Any], at: str) -> Iterator[Finding]:
    if len(ports) > 1:
        yield json_path(at, "ports"), f"{len(ports)} ports: a Knative container has at most one"
    for i, port in enumerate(map(_dict, ports)):
        name, number = port.get("name"), _int(port.get("containerPort"))
        if name is not None and name not in PORT_NAMES:
            yield json_path(at, "ports", i, "name"), f"{name!r} is not one of {PORT_NAMES}"
        if number in RESERVED_PORTS:
            yield json_path(at, "ports", i, "containerPort"), f"{number} is reserved by Knative"
        elif number is not None and not 0 <= number <= 65535:
            yield json_path(at, "ports", i, "containerPort"), f"{number} is not a port"


def _check_env(env: list[Any], at: str) -> Iterator[Finding]:
    seen: set[str] = set()
    for i, var in enumerate(map(_dict, env)):
        name = var.get("name")
        if name in RESERVED_ENV:
            yield json_path(at, "env", i, "name"), f"{name} is reserved: Knative sets it"
        elif name in seen:
            yield json_path(at, "env", i, "name"), f"{name} is set twice"
        if "value" in var and "valueFrom" in var:
            yield json_path(at, "env", i), "value and valueFrom are exclusive"
        seen.add(str(name))


def _check_traffic(traffic: Any, service: str) -> Iterator[Finding]:
    if not _list(traffic):
        return
    total, tags = 0, set()
    for i, target in enumerate(map(_dict, traffic)):
        at = json_path("spec.traffic", i)
        percent = _int(target.get("percent")) or 0
        if not 0 <= percent <= 100:
            yield json_path(at, "percent"), f"{percent} is not in [0, 100]"
        total += percent
        revision, latest = target.get("revisionName"), target.get("latestRevision")
        if latest is True and revision:
            yield at, "latestRevision: true conflicts with revisionName"
        if latest is False and not revision:
            yield at, "latestRevision: false needs a revisionName"
        if isinstance(revision, str) and not revision.startswith(f"{service}-"):
            yield json_path(at, "revisionName"), f"{revision!r} is not a revision of {service}"
        if "configurationName" in target:
            yield json_path(at, "configurationName"), "not allowed in a Service's traffic"
        tag = target.get("tag")
        if isinstance(tag, str):
            if not dns1035_label(f"{tag}-{service}"):
                yield json_path(at, "tag"), f"{tag!r}: {tag}-{service} is not a DNS-1035 label"
            if tag in tags:
                yield json_path(at, "tag"), f"tag {tag!r} is used twice"
            tags.add(tag)
    if total != 100:
        yield "spec.traffic", f"traffic percents sum to {total}, want 100"


# -- Knative Eventing ------------------------------------------------------------------------

DIALECTS = ("exact", "prefix", "suffix", "all", "any", "not", "cesql")
BACKOFF_POLICIES = ("linear", "exponential")
_DELIVERY_FIELDS = {"retry", "backoffPolicy", "backoffDelay", "deadLetterSink", "timeout"}
_DELIVERY_FIELDS |= {"format", "retryAfterMax"}
_TRIGGER_FIELDS = {"broker", "brokerRef", "filter", "filters", "subscriber", "delivery"}
_ATTRIBUTE = re.compile(r"[a-z0-9]+")


def check_destination(destination: Any, at: str) -> Iterator[Finding]:
    """A duck Destination (subscriber, sink, deadLetterSink): a ref, a uri, or both."""
    destination = _dict(destination)
    ref, uri = destination.get("ref"), destination.get("uri")
    if ref is None and uri is None:
        yield at, "needs a ref or a uri"
    for field in ("apiVersion", "kind", "name") if ref is not None else ():
        if not _dict(ref).get(field):
            yield json_path(at, "ref", field), "required"
    if isinstance(uri, str):
        parts = urlsplit(uri)
        absolute = bool(parts.scheme and parts.netloc)
        if ref is not None and absolute:
            yield json_path(at, "uri"), "an absolute uri is not allowed beside a ref"
        if ref is None and not absolute:
            yield json_path(at, "uri"), f"{uri!r} is not an absolute URL"


def check_delivery(delivery: Any, at: str) -> Iterator[Finding]:
    """A DeliverySpec (Trigger, Broker): retry, backoff, timeout, dead-letter sink."""
    delivery = _dict(delivery)
    for key in delivery.keys() - _DELIVERY_FIELDS:  # the schema keeps unknown fields here
        yield json_path(at, key), f"unknown delivery field {key!r}"
    policy = delivery.get("backoffPolicy")
    if policy is not None and policy not in BACKOFF_POLICIES:
        yield json_path(at, "backoffPolicy"), f"{policy!r} is not one of {BACKOFF_POLICIES}"
    for key in ("backoffDelay", "timeout"):
        seconds = iso_duration(delivery[key]) if key in delivery else 1.0
        if seconds is None or seconds < 0 or (key == "timeout" and seconds == 0):
            article = "a positive" if key == "timeout" else "an"
            message = f"{delivery[key]!r} is not {article} ISO-8601 duration (e.g. PT0.5S)"
            yield json_path(at, key), message
    retry = delivery.get("retry")
    if retry is not None and (_int(retry) is None or retry < 0):
        yield json_path(at, "retry"), f"{retry!r} is not an integer >= 0"
    if "deadLetterSink" in delivery:
        yield from check_destination(delivery["deadLetterSink"], json_path(at, "deadLetterSink"))


def check_filter(expression: Any, at: str) -> Iterator[Finding]:
    """One ``filters`` entry: exactly one dialect; all, any and not nest further entries."""
    expression = _dict(expression)
    used = [dialect for dialect in DIALECTS if dialect in expression]
    for key in expression.keys() - set(DIALECTS):
        yield json_path(at, key), f"unknown filter dialect {key!r}"
    if len(used) != 1:
        found = ", ".join(used) or "none"
        yield at, f"a filter uses exactly one dialect of {', '.join(DIALECTS)} (found: {found})"
    for dialect in used:
        value, where = expression[dialect], json_path(at, dialect)
        if dialect in ("exact", "prefix", "suffix"):
            yield from _check_attribute_map(value, where, single=True)
        elif dialect in ("all", "any"):
            if not _list(value):
                yield where, "needs a non-empty list of filters"
            for i, inner in enumerate(_list(value)):
                yield from check_filter(inner, json_path(where, i))
        elif dialect == "not":
            yield from check_filter(value, where)
        elif not isinstance(value, str) or not value.strip():
            yield where, "needs a CESQL expression"


def _check_attribute_map(value: Any, at: str, single: bool) -> Iterator[Finding]:
    if not isinstance(value, dict) or (single and len(value) != 1):
        yield at, "needs exactly one attribute: value pair" if single else "needs a mapping"
        return
    for key, expected in value.items():
        if not _ATTRIBUTE.fullmatch(str(key)):
            yield json_path(at, str(key)), f"{key!r} is not a CloudEvents attribute name"
        if not isinstance(expected, str):
            yield json_path(at, str(key)), f"{expected!r} is not a string"


def check_trigger(doc: dict[str, Any]) -> Iterator[Finding]:
    spec = _dict(doc.get("spec"))
    for key in spec.keys() - _TRIGGER_FIELDS:  # the schema keeps unknown fields in spec
        yield json_path("spec", key), f"unknown Trigger field {key!r}"
    if not spec.get("broker") and not spec.get("brokerRef"):
        yield "spec.broker", "required"
    yield from check_destination(spec.get("subscriber"), "spec.subscriber")
    if "attributes" in _dict(spec.get("filter")):
        attributes = spec["filter"]["attributes"]
        yield from _check_attribute_map(attributes, "spec.filter.attributes", single=False)
    for i, expression in enumerate(_list(spec.get("filters"))):
        yield from check_filter(expression, json_path("spec.filters", i))
    yield from check_delivery(spec.get("delivery"), "spec.delivery")


def check_broker(doc: dict[str, Any]) -> Iterator[Finding]:
    yield from check_delivery(_dict(doc.get("spec")).get("delivery"), "spec.delivery")


def check_sink_binding(doc: dict[str, Any]) -> Iterator[Finding]:
    spec = _dict(doc.get("spec"))
    subject = spec.get("subject")
    if not isinstance(subject, dict):
        yield "spec.subject", "required: the workload that gets K_SINK"
    else:
        for field in ("apiVersion", "kind"):
            if not subject.get(field):
                yield json_path("spec.subject", field), "required"
        if ("name" in subject) == ("selector" in subject):
            yield "spec.subject", "needs exactly one of name and selector"
    yield from check_destination(spec.get("sink"), "spec.sink")


# -- Istio -----------------------------------------------------------------------------------

_STRING_MATCHES = ("uri", "scheme", "method", "authority")
_STRING_MATCH_MAPS = ("headers", "queryParams", "withoutHeaders")
_NOT_RE2 = re.compile(r"\(\?<?[=!]|\\[1-9]")  # look-around and back-references


def _check_regex(match: Any, at: str) -> Iterator[Finding]:
    pattern = _dict(match).get("regex")
    if not isinstance(pattern, str):
        return
    try:
        re.compile(pattern)
    except re.error as e:
        yield json_path(at, "regex"), f"{pattern!r} does not compile: {e}"
        return
    if _NOT_RE2.search(pattern):
        yield json_path(at, "regex"), f"{pattern!r}: RE2 has no look-around or back-references"


def check_virtual_service(doc: dict[str, Any]) -> Iterator[Finding]:
    """Route weights, match regexes and fault percentages (durations: see the schema)."""
    spec = _dict(doc.get("spec"))
    if not _list(spec.get("hosts")) and not spec.get("delegate"):
        yield "spec.hosts", "needs at least one host"
    for i, rule in enumerate(map(_dict, _list(spec.get("http")))):
        at = json_path("spec.http", i)
        routes = [_dict(route) for route in _list(rule.get("route"))]
        weights = [_int(route.get("weight")) for route in routes]
        if len(routes) > 1 or any(w is not None for w in weights):
            total = sum(w or 0 for w in weights)
            if total != 100:
                yield json_path(at, "route"), f"route weights sum to {total}, want 100"
        for j, weight in enumerate(weights):
            if weight is not None and not 0 <= weight <= 100:
                yield json_path(at, "route", j, "weight"), f"{weight} is not in [0, 100]"
        for j, match in enumerate(map(_dict, _list(rule.get("match")))):
            where = json_path(at, "match", j)
            for field in _STRING_MATCHES:
                yield from _check_regex(match.get(field), json_path(where, field))
            for field in _STRING_MATCH_MAPS:
                for name, value in _dict(match.get(field)).items():
                    yield from _check_regex(value, json_path(where, field, name))
        fault = _dict(rule.get("fault"))
        for kind in ("delay", "abort"):
            value = _dict(_dict(fault.get(kind)).get("percentage")).get("value")
            if isinstance(value, int | float) and not 0 <= value <= 100:
                yield (
                    json_path(at, "fault", kind, "percentage", "value"),
                    f"{value} is not in [0, 100]",
                )


# -- the table -------------------------------------------------------------------------------

RULES: dict[tuple[str, str], Callable[[dict[str, Any]], Iterator[Finding]]] = {
    ("serving.knative.dev", "Service"): check_service,
    ("eventing.knative.dev", "Trigger"): check_trigger,
    ("eventing.knative.dev", "Broker"): check_broker,
    ("sources.knative.dev", "SinkBinding"): check_sink_binding,
    ("networking.istio.io", "VirtualService"): check_virtual_service,
}


def semantic_findings(doc: dict[str, Any]) -> Iterator[Finding]:
    """The rules for this object's group and kind (any version); none for other kinds."""
    group = str(doc.get("apiVersion", "")).rpartition("/")[0]
    rule = RULES.get((group, str(doc.get("kind", ""))))
    if rule is not None:
        yield from rule(doc)
