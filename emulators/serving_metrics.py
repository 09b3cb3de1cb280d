"""The gateway's ``/metrics``: per revision, the requests it answered (by status), the
replicas ready and wanted, requests in flight, queued and held, and cold starts, as
Prometheus series read from the platform's state at each scrape.

Served on the cluster-local listener only, as a cluster's Knative metrics are scraped from
inside it; ``/metrics`` on the public listener is routed like any other path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from emulators.activator import Revision

# (service, revision, status) -> requests the gateway answered
RequestCounts = Counter[tuple[str, str, int]]


class ServingCollector(Collector):
    def __init__(
        self, requests: RequestCounts, revisions: Callable[[], dict[str, tuple[str, Revision]]]
    ) -> None:
        """``revisions``: revision name -> (its Service, the revision) of what runs now."""
        self._requests, self._revisions = requests, revisions

    def collect(self) -> Iterator[Metric]:
        labels = ["service", "revision"]
        answered = CounterMetricFamily(
            "mlf_gateway_requests", "Requests the gateway answered", labels=[*labels, "code"]
        )
        for (service, name, status), count in sorted(self._requests.items()):
            answered.add_metric([service, name, str(status)], count)
        yield answered
        gauges = {
            "replicas": ("mlf_revision_replicas", "Ready replicas"),
            "desired": ("mlf_revision_desired_replicas", "Replicas the autoscaler wants"),
            "in_flight": ("mlf_revision_requests_in_flight", "Requests at its replicas now"),
            "queued": ("mlf_revision_requests_queued", "Requests waiting for a slot"),
            "held": ("mlf_revision_requests_held", "Requests the activator holds now"),
        }
        families = {k: GaugeMetricFamily(n, h, labels=labels) for k, (n, h) in gauges.items()}
        cold = GaugeMetricFamily(
            "mlf_revision_cold_start_seconds",
            "Seconds its last start from zero took to a ready replica",
            labels=labels,
        )
        cold_starts = CounterMetricFamily(
            "mlf_revision_cold_starts", "Starts from zero replicas", labels=labels
        )
        for name, (service, revision) in sorted(self._revisions().items()):
            for key, family in families.items():
                family.add_metric([service, name], float(getattr(revision, key)))
            if revision.cold_start is not None:
                cold.add_metric([service, name], revision.cold_start)
            cold_starts.add_metric([service, name], revision.cold_starts)
        yield from families.values()
        yield cold
        yield cold_starts


def exposition(collector: ServingCollector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
