"""The routing a Knative + Istio ingress would do, as a pure table built from the manifests.

Knative Services give hosts ``<svc>.<namespace>.<domain>``, a traffic split over revisions
(percent, ``tag`` -> host ``<tag>-<svc>...`` and the ``Knative-Serving-Tag`` header) and
``timeoutSeconds``; Istio VirtualServices give ordered http rules (first match wins; header
and uri matches exact/prefix/regex), weighted destinations, ``rewrite``, ``timeout`` and
``fault`` delay/abort. ``RouteTable.decide`` turns one request into one ``Decision``; the
gateway carries it out. Randomness comes from a seedable ``random.Random``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from emulators.durations import go_seconds
from emulators.manifests import Resource, ServiceSpec, knative_services

VIRTUAL_SERVICE_KINDS = {
    (f"networking.istio.io/{v}", "VirtualService") for v in ("v1", "v1beta1", "v1alpha3")
}
KNATIVE_LOCAL_GATEWAY = "knative-local-gateway"
KNATIVE_INGRESS_GATEWAY = "knative-ingress-gateway"  # the public one (knative-serving/...)


@dataclass(frozen=True)
class Target:
    """One entry of a Knative Service's traffic block."""

    revision: str
    percent: int
    tag: str | None
    upstream: str | None  # the revision process's URL; None when it does not run here
    latest: bool = False  # latestRevision: true, resolved per request (RouteTable.resolve)


@dataclass(frozen=True)
class KService:
    name: str
    namespace: str
    targets: tuple[Target, ...]
    container_concurrency: int
    timeout: float
    cluster_local: bool = False  # served by the cluster-local gateway only


@dataclass(frozen=True)
class StringMatch:
    kind: str  # exact | prefix | regex
    value: str

    def __call__(self, text: str | None) -> bool:
        if text is None:
            return False
        if self.kind == "exact":
            return text == self.value
        if self.kind == "prefix":
            return text.startswith(self.value)
        return re.fullmatch(self.value, text) is not None


@dataclass(frozen=True)
class HttpMatch:
    """One ``match`` entry: all its conditions must hold."""

    headers: tuple[tuple[str, StringMatch], ...] = ()
    uri: StringMatch | None = None

    def __call__(self, path: str, headers: Mapping[str, str]) -> bool:
        if self.uri is not None and not self.uri(path):
            return False
        return all(match(headers.get(name)) for name, match in self.headers)


@dataclass(frozen=True)
class Destination:
    service: str
    weight: int
    set_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class HttpRule:
    name: str
    matches: tuple[HttpMatch, ...]
    destinations: tuple[Destination, ...]
    timeout: float | None = None
    delay: tuple[float, float] | None = None  # (seconds, percent of requests)
    abort: tuple[int, float] | None = None  # (status, percent of requests)


@dataclass(frozen=True)
class VirtualService:
    name: str
    namespace: str
    hosts: tuple[str, ...]
    rules: tuple[HttpRule, ...]
    public: bool = False  # bound to Knative's ingress gateway (else the mesh's only)


@dataclass(frozen=True)
class Decision:
    """Where one request goes and what happens on the way."""

    service: KService
    target: Target
    path: str
    timeout: float
    set_headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    abort: int | None = None
    route: str = ""  # the VirtualService/rule that decided, for logs and /_routes


class NoRoute(LookupError):
    """No Service or VirtualService answers this host or path."""


def _none(service: str) -> str | None:
    return None


@dataclass
class RouteTable:
    services: dict[str, KService]
    virtual: dict[str, VirtualService]
    rng: random.Random = field(default_factory=random.Random)
    latest_ready: Callable[[str], str | None] = _none
    upstreams: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        resources: list[Resource],
        upstreams: Mapping[str, str],
        rng: random.Random | None = None,
        latest_ready: Callable[[str], str | None] = _none,
    ) -> RouteTable:
        """``upstreams`` maps revision names to the URLs of their local processes;
        ``latest_ready`` gives a Service's newest ready revision (Knative's
        ``latestReadyRevisionName``), where ``latestRevision`` traffic goes; None (none ready
        yet, or no launcher to ask): the template's revision."""
        services = {s.name: _kservice(s, upstreams) for s in knative_services(resources)}
        virtual = {
            v.name: v for r in resources if r.key in VIRTUAL_SERVICE_KINDS for v in [_virtual(r)]
        }
        return cls(services, virtual, rng or random.Random(), latest_ready, upstreams)

    def resolve(self, service: str, target: Target) -> Target:
        """``target`` with a ``latestRevision`` target's revision as it is now."""
        if not target.latest or (revision := self.latest_ready(service)) is None:
            return target
        if revision == target.revision:
            return target
        return replace(target, revision=revision, upstream=self.upstreams.get(revision))

    def names(self) -> list[str]:
        return sorted({*self.services, *self.virtual})

    def locate(self, host: str, path: str) -> tuple[str, str, str | None]:
        """(route name, path inside it, tag from the host) by Host header, else path prefix."""
        label = host.split(":", 1)[0].split(".", 1)[0]
        if label in self.virtual or label in self.services:
            return label, path, None
        for name in self.services:  # <tag>-<service> host of a tagged traffic target
            if label.endswith("-" + name):
                tag = label[: -len(name) - 1]
                if any(t.tag == tag for t in self.services[name].targets):
                    return name, path, tag
        first, _, rest = path.lstrip("/").partition("/")
        if first in self.virtual or first in self.services:
            return first, "/" + rest, None
        raise NoRoute(f"no Knative Service or VirtualService for host {host!r} or path {path!r}")

    def decide(
        self, host: str, path: str, headers: Mapping[str, str], *, public: bool = False
    ) -> Decision:
        """Headers must be keyed in lower case. ``public``: the request came to the public
        ingress, which serves neither cluster-local Services nor VirtualServices bound to the
        mesh only, and answers them as it answers a name it does not know (404, as Knative's
        ingress does). A VirtualService on the ingress may still route to a cluster-local
        Service: it hands the request to Knative's local gateway, as on a cluster."""
        name, inner, tag = self.locate(host, path)
        if public and not self._public(name):
            raise NoRoute(
                f"no Knative Service or VirtualService for host {host!r} or path {path!r}"
            )
        if name in self.virtual:
            return self._through_virtual(self.virtual[name], inner, headers)
        service = self.services[name]
        return Decision(
            service,
            self._split(service, tag or headers.get("knative-serving-tag")),
            inner,
            service.timeout,
        )

    def _public(self, name: str) -> bool:
        if name in self.virtual:
            return self.virtual[name].public
        return not self.services[name].cluster_local

    def _through_virtual(
        self, vs: VirtualService, path: str, headers: Mapping[str, str]
    ) -> Decision:
        for rule in vs.rules:
            if rule.matches and not any(m(path, headers) for m in rule.matches):
                continue
            destination = self._weighted(rule.destinations)
            service = self.services.get(destination.service)
            if service is None:
                raise NoRoute(f"{vs.name}/{rule.name}: no Knative Service {destination.service!r}")
            tag = dict(destination.set_headers).get("knative-serving-tag") or headers.get(
                "knative-serving-tag"
            )
            delay = rule.delay[0] if rule.delay and self._hit(rule.delay[1]) else 0.0
            abort = rule.abort[0] if rule.abort and self._hit(rule.abort[1]) else None
            return Decision(
                service,
                self._split(service, tag),
                path,
                rule.timeout or service.timeout,
                destination.set_headers,
                delay,
                abort,
                f"{vs.name}/{rule.name}",
            )
        raise NoRoute(f"VirtualService {vs.name}: no http rule matches {path!r}")

    def _split(self, service: KService, tag: str | None) -> Target:
        return self.resolve(service.name, self._pick(service, tag))

    def _pick(self, service: KService, tag: str | None) -> Target:
        if tag:
            for target in service.targets:
                if target.tag == tag:
                    return target
            # An unknown tag falls through to the split, as Knative's tag header routing does.
        pick = self.rng.uniform(0, 100)
        for target in service.targets:
            pick -= target.percent
            if pick < 0 and target.percent:
                return target
        return next(t for t in service.targets if t.percent)

    def _weighted(self, destinations: tuple[Destination, ...]) -> Destination:
        total = sum(d.weight for d in destinations)
        pick = self.rng.uniform(0, total)
        for destination in destinations:
            pick -= destination.weight
            if pick < 0:
                return destination
        return destinations[-1]

    def _hit(self, percent: float) -> bool:
        return self.rng.uniform(0, 100) < percent


def _kservice(spec: ServiceSpec, upstreams: Mapping[str, str]) -> KService:
    targets = tuple(
        Target(t.revision, t.percent, t.tag, upstreams.get(t.revision), t.latest)
        for t in spec.traffic
    )
    return KService(
        name=spec.name,
        namespace=spec.namespace,
        targets=targets,
        container_concurrency=spec.container_concurrency,
        timeout=float(spec.timeout_seconds),
        cluster_local=spec.cluster_local,
    )


def _service_of(destination: Mapping[str, Any], authority: str | None) -> str:
    """The Knative Service a destination reaches: its host, or the authority it is rewritten to
    when it goes through Knative's local gateway (how Istio hands a request to Knative)."""
    host = str(destination["destination"]["host"])
    if host.split(".", 1)[0] == KNATIVE_LOCAL_GATEWAY:
        request_set = destination.get("headers", {}).get("request", {}).get("set", {})
        authority = request_set.get("Host") or request_set.get("host") or authority
        if not authority:
            raise ValueError(f"{host} needs rewrite.authority or a Host header to reach a Service")
        host = authority
    return host.split(".", 1)[0]


def _string_match(spec: Mapping[str, str]) -> StringMatch:
    ((kind, value),) = spec.items()
    return StringMatch(kind, value)


def _virtual(resource: Resource) -> VirtualService:
    doc = resource.doc
    rules = []
    for i, http in enumerate(doc["spec"].get("http", [])):
        authority = http.get("rewrite", {}).get("authority")
        matches = tuple(
            HttpMatch(
                headers=tuple(
                    (k.lower(), _string_match(v)) for k, v in m.get("headers", {}).items()
                ),
                uri=_string_match(m["uri"]) if "uri" in m else None,
            )
            for m in http.get("match", [])
        )
        destinations = tuple(
            Destination(
                _service_of(route, authority),
                int(route.get("weight", 100 if len(http["route"]) == 1 else 0)),
                tuple(
                    (k.lower(), str(v))
                    for k, v in route.get("headers", {}).get("request", {}).get("set", {}).items()
                    if k.lower() != "host"
                ),
            )
            for route in http["route"]
        )
        fault = http.get("fault", {})
        delay = fault.get("delay")
        abort = fault.get("abort")
        rules.append(
            HttpRule(
                name=http.get("name", f"rule-{i}"),
                matches=matches,
                destinations=destinations,
                timeout=go_seconds(http["timeout"]) if "timeout" in http else None,
                delay=(go_seconds(delay["fixedDelay"]), _percent(delay)) if delay else None,
                abort=(int(abort["httpStatus"]), _percent(abort)) if abort else None,
            )
        )
    return VirtualService(
        name=doc["metadata"]["name"],
        namespace=doc["metadata"].get("namespace", "default"),
        hosts=tuple(doc["spec"].get("hosts", [])),
        rules=tuple(rules),
        public=any(
            g.rsplit("/", 1)[-1] == KNATIVE_INGRESS_GATEWAY for g in doc["spec"].get("gateways", [])
        ),
    )


def _percent(fault: Mapping[str, Any]) -> float:
    return float(fault.get("percentage", {}).get("value", 100.0))
