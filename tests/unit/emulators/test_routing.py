"""The routing table built from manifests: Knative traffic, tags, and Istio http rules."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from emulators.manifests import Resource
from emulators.routing import NoRoute, RouteTable

GATEWAY = "knative-local-gateway.istio-system.svc.cluster.local"


def ksvc(name: str, traffic: list[dict[str, Any]] | None = None, **spec: Any) -> Resource:
    doc: dict[str, Any] = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"template": {"spec": {"containers": [{"image": "x"}], **spec}}},
    }
    if traffic is not None:
        doc["spec"]["traffic"] = traffic
    return Resource(doc, Path(f"{name}.yaml"))


def vs(name: str, http: list[dict[str, Any]]) -> Resource:
    doc = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"hosts": [f"{name}.ns.example.com"], "http": http},
    }
    return Resource(doc, Path(f"{name}.yaml"))


def to(service: str, weight: int | None = None) -> dict[str, Any]:
    """A destination through Knative's local gateway, as on a cluster."""
    route: dict[str, Any] = {
        "destination": {"host": GATEWAY},
        "headers": {"request": {"set": {"Host": f"{service}.ns.svc.cluster.local"}}},
    }
    if weight is not None:
        route["weight"] = weight
    return route


UPSTREAMS = {
    "a-00001": "http://a",
    "b-00001": "http://b",
    "c-00001": "http://c",
    "old": "http://old",
}


def table(*resources: Resource, seed: int = 7) -> RouteTable:
    return RouteTable.build(list(resources), UPSTREAMS, random.Random(seed))


def within_bounds(count: int, n: int, p: float) -> bool:
    """Inside 4.5 standard deviations of a binomial(n, p): fails about once in 150,000 runs."""
    return abs(count - n * p) <= 4.5 * math.sqrt(n * p * (1 - p))


def test_a_service_without_traffic_sends_everything_to_its_latest_revision() -> None:
    decision = table(ksvc("a")).decide("localhost", "/a/predict", {})
    assert (decision.target.upstream, decision.path) == ("http://a", "/predict")


def test_host_header_routes_before_the_path() -> None:
    t = table(ksvc("a"), ksvc("b"))
    assert t.decide("b.ns.example.com", "/a/x", {}).service.name == "b"
    assert t.decide("b.ns.svc.cluster.local:80", "/x", {}).path == "/x"


def test_percent_split_follows_the_manifest() -> None:
    t = table(
        ksvc("a", [{"revisionName": "old", "percent": 30}, {"latestRevision": True, "percent": 70}])
    )
    counts = Counter(t.decide("localhost", "/a/", {}).target.revision for _ in range(2000))
    assert within_bounds(counts["old"], 2000, 0.3)
    assert counts["old"] + counts["a-00001"] == 2000


def test_the_split_is_seedable() -> None:
    traffic = [{"revisionName": "old", "percent": 50}, {"latestRevision": True, "percent": 50}]
    t1, t2 = table(ksvc("a", traffic), seed=3), table(ksvc("a", traffic), seed=3)
    assert [t1.decide("h", "/a", {}).target.revision for _ in range(50)] == [
        t2.decide("h", "/a", {}).target.revision for _ in range(50)
    ]


def test_tags_by_header_and_by_host_and_unknown_tags_fall_through() -> None:
    traffic = [
        {"latestRevision": True, "percent": 100},
        {"revisionName": "old", "percent": 0, "tag": "previous"},
    ]
    t = table(ksvc("a", traffic))
    assert t.decide("h", "/a", {"knative-serving-tag": "previous"}).target.upstream == "http://old"
    assert t.decide("previous-a.ns.example.com", "/", {}).target.upstream == "http://old"
    assert all(
        t.decide("h", "/a", {"knative-serving-tag": "nope"}).target.revision == "a-00001"
        for _ in range(50)
    )


def test_revision_not_running_locally_has_no_upstream() -> None:
    t = table(ksvc("a", [{"revisionName": "a-00007", "percent": 100}]))
    assert t.decide("h", "/a", {}).target.upstream is None


def test_unknown_host_and_path() -> None:
    with pytest.raises(NoRoute):
        table(ksvc("a")).decide("localhost", "/zzz/predict", {})


CONDITION = vs(
    "route",
    [
        {
            "name": "exact",
            "match": [{"headers": {"target": {"exact": "mountain"}}}],
            "route": [to("b")],
        },
        {
            "name": "prefix",
            "match": [{"headers": {"X-Variant": {"prefix": "rf"}}}],
            "route": [to("c")],
        },
        {
            "name": "regex-or-uri",
            "match": [{"headers": {"user": {"regex": "u[0-9]+"}}}, {"uri": {"prefix": "/special"}}],
            "route": [to("c")],
        },
        {"name": "default", "route": [to("a")]},
    ],
)


@pytest.mark.parametrize(
    ("path", "headers", "service", "rule"),
    [
        ("/route/predict", {"target": "mountain"}, "b", "exact"),
        ("/route/predict", {"target": "mountains"}, "a", "default"),  # exact is exact
        ("/route/predict", {"x-variant": "rf-2"}, "c", "prefix"),  # names match case-insensitively
        ("/route/predict", {"user": "u42"}, "c", "regex-or-uri"),
        ("/route/predict", {"user": "u42x"}, "a", "default"),  # a regex must match the whole value
        ("/route/special/x", {}, "c", "regex-or-uri"),  # match entries are ORed
        ("/route/predict", {"target": "mountain", "user": "u1"}, "b", "exact"),  # first match wins
        ("/route/predict", {}, "a", "default"),
    ],
)
def test_virtual_service_rules(path: str, headers: dict[str, str], service: str, rule: str) -> None:
    t = table(ksvc("a"), ksvc("b"), ksvc("c"), CONDITION)
    decision = t.decide("localhost", path, headers)
    assert (decision.service.name, decision.route) == (service, f"route/{rule}")


def test_virtual_service_weights() -> None:
    t = table(ksvc("a"), ksvc("b"), vs("ab", [{"route": [to("a", 60), to("b", 40)]}]))
    counts = Counter(
        t.decide("ab.ns.example.com", "/predict", {}).service.name for _ in range(2000)
    )
    assert within_bounds(counts["a"], 2000, 0.6)


def test_faults_and_timeouts() -> None:
    http = [
        {
            "route": [to("a")],
            "timeout": "1.5s",
            "fault": {
                "delay": {"fixedDelay": "200ms", "percentage": {"value": 100}},
                "abort": {"httpStatus": 503, "percentage": {"value": 50}},
            },
        }
    ]
    t = table(ksvc("a"), vs("f", http))
    decisions = [t.decide("h", "/f/x", {}) for _ in range(2000)]
    assert {d.delay for d in decisions} == {0.2}
    assert {d.timeout for d in decisions} == {1.5}
    assert within_bounds(sum(d.abort == 503 for d in decisions), 2000, 0.5)


def test_service_timeout_applies_without_a_rule_timeout() -> None:
    assert table(ksvc("a", timeoutSeconds=7)).decide("h", "/a", {}).timeout == 7.0


def test_destination_by_service_host_and_by_rewrite_authority() -> None:
    direct = {"destination": {"host": "b.ns.svc.cluster.local"}}
    rewritten = {
        "rewrite": {"authority": "c.ns.svc.cluster.local"},
        "route": [{"destination": {"host": GATEWAY}}],
    }
    t = table(ksvc("b"), ksvc("c"), vs("d", [{"route": [direct]}]), vs("r", [rewritten]))
    assert t.decide("h", "/d/", {}).service.name == "b"
    assert t.decide("h", "/r/", {}).service.name == "c"
