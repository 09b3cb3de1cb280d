"""The local broker over real HTTP: real subscriber processes, manifests in tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from emulators.broker import Broker, Topology
from emulators.manifests import load_kustomization
from emulators.oidc import Issuer, trigger_subject
from emulators.processes import free_port
from functions.core import events
from functions.core.errors import Unauthorized
from functions.core.event_auth import EventVerifier
from tests.helpers import AppThread, poll_until

pytestmark = pytest.mark.e2e
TYPE = "dev.mlserving.test.sent.v1"


def attempts(sink: str, path: str) -> list[dict[str, Any]]:
    return [a for a in httpx.get(f"{sink}/_events").json() if a["path"] == path]


def deliveries(sink: str, path: str, event_id: str) -> list[dict[str, Any]]:
    """The attempts to deliver the event ``event_id`` that reached ``path`` on the sink."""
    return [a for a in attempts(sink, path) if a["headers"]["ce-id"] == event_id]


def trigger(name: str, subscriber: str, type_: str = TYPE, **delivery: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "broker": "default",
        "filter": {"attributes": {"type": type_}},
        "subscriber": {"uri": subscriber},
    }
    if delivery:
        spec["delivery"] = delivery
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": spec,
    }


class RunningBroker(AppThread):
    def __init__(
        self,
        folder: Path,
        docs: list[dict[str, Any]],
        ttl: int = 255,
        port: int | None = None,
        **options: Any,
    ) -> None:
        broker_doc = {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Broker",
            "metadata": {"name": "default"},
            "spec": {
                "delivery": {"retry": 2, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"}
            },
        }
        names = []
        for doc in [broker_doc, *docs]:
            name = f"{doc['kind']}-{doc['metadata']['name']}.yaml".lower()
            (folder / name).write_text(yaml.safe_dump(doc))
            names.append(name)
        (folder / "kustomization.yaml").write_text(
            yaml.safe_dump({"namespace": "ns", "resources": names})
        )
        # Knative Destination: an absolute uri here (refs are resolved by emulators.dev).
        self.broker = Broker(
            lambda: Topology.build(load_kustomization(folder), lambda d: str(d["uri"])),
            time_scale=0.05,
            ttl=ttl,
            **options,
        )
        super().__init__(self.broker.app(), port)
        self.ingress = f"{self.url}/ns/default"

    def send(self, type_: str = TYPE, data: Any = None, **extensions: str) -> str:
        event = events.make(type_, "/tests", data if data is not None else {"n": 1}, **extensions)
        headers, body = events.to_binary(event)
        response = httpx.post(self.ingress, headers=headers, content=body)
        assert response.status_code == 202, response.text
        return str(event["id"])

    def stats(self) -> dict[str, int]:
        return dict(httpx.get(f"{self.url}/_stats").json())


def settle(check: Callable[[], bool], seconds: float = 20) -> None:
    poll_until(check, seconds, "the broker did not settle")


def send_until_dead_lettered(broker: RunningBroker) -> str:
    """Send an event; its id once the broker has dead-lettered it."""
    event_id = broker.send()
    settle(lambda: broker.stats().get("dead_lettered") == 1)
    return event_id


def retried_once_then_dead_lettered(
    broker_for: Callable[..., RunningBroker], sink: str, name: str, query: str, dls: str
) -> tuple[RunningBroker, str]:
    """An event through a Trigger to the sink's ``/<name>?<query>``, retried once, then sent
    to the sink's ``dls`` path: the broker, and the event's id once it is dead-lettered."""
    delivery = {"deadLetterSink": {"uri": f"{sink}{dls}"}, "retry": 1, "backoffDelay": "PT0.1S"}
    broker = broker_for([trigger(name, f"{sink}/{name}?{query}", **delivery)])
    return broker, send_until_dead_lettered(broker)


@pytest.fixture
def broker_for(tmp_path: Path) -> Iterator[Callable[..., RunningBroker]]:
    running: list[RunningBroker] = []

    def start(docs: list[dict[str, Any]], **kwargs: Any) -> RunningBroker:
        running.append(RunningBroker(tmp_path, docs, **kwargs))
        return running[-1]

    yield start
    for broker in running:
        broker.stop()


def test_a_subscriber_failing_twice_then_succeeding_gets_the_event_once(
    broker_for: Callable[..., RunningBroker], sink: str
) -> None:
    broker = broker_for([trigger("flaky", f"{sink}/flaky?fail=2")])
    event_id = broker.send(jobid="job-1")
    settle(lambda: broker.stats().get("delivered") == 1)
    seen = deliveries(sink, "/flaky", event_id)
    assert [a["failed"] for a in seen] == [True, True, False]
    assert seen[-1]["headers"]["ce-jobid"] == "job-1"
    assert seen[-1]["headers"]["x-request-id"] == "job-1"
    assert broker.stats()["retries"] == 2


def test_after_the_last_retry_the_event_goes_to_the_dead_letter_sink(
    broker_for: Callable[..., RunningBroker], sink: str
) -> None:
    _, event_id = retried_once_then_dead_lettered(broker_for, sink, "broken", "fail=99", "/dls")
    assert len(deliveries(sink, "/broken", event_id)) == 2
    (dead,) = deliveries(sink, "/dls", event_id)
    assert dead["headers"]["ce-knativeerrorcode"] == "503"
    assert dead["headers"]["ce-knativeerrordest"] == f"{sink}/broken?fail=99"


def test_a_plain_ok_body_counts_as_a_failed_delivery(
    broker_for: Callable[..., RunningBroker], sink: str
) -> None:
    broker, event_id = retried_once_then_dead_lettered(
        broker_for, sink, "ok-body", "ok=1", "/dls-ok"
    )
    assert len(deliveries(sink, "/ok-body", event_id)) == 2
    assert broker.stats().get("delivered", 0) == 0


def test_a_permanent_failure_is_not_retried(
    broker_for: Callable[..., RunningBroker], sink: str
) -> None:
    dls = {"deadLetterSink": {"uri": f"{sink}/dls-400"}, "retry": 3}
    broker = broker_for([trigger("rejecting", f"{sink}/rejecting?fail=99&status=400", **dls)])
    event_id = send_until_dead_lettered(broker)
    assert len(deliveries(sink, "/rejecting", event_id)) == 1


def test_replies_re_enter_the_broker(broker_for: Callable[..., RunningBroker], sink: str) -> None:
    broker = broker_for(
        [
            trigger("asks", f"{sink}/asks?reply=dev.mlserving.test.answered.v1"),
            trigger("answers", f"{sink}/answers", type_="dev.mlserving.test.answered.v1"),
        ]
    )
    before = len(attempts(sink, "/answers"))
    broker.send()
    settle(lambda: len(attempts(sink, "/answers")) == before + 1)
    (answer,) = attempts(sink, "/answers")[before:]
    assert answer["headers"]["ce-type"] == "dev.mlserving.test.answered.v1"
    assert answer["headers"]["ce-knativebrokerttl"] == "254"


def test_a_reply_loop_is_cut_by_the_ttl(
    broker_for: Callable[..., RunningBroker], sink: str
) -> None:
    loop_type = "dev.mlserving.test.looped.v1"
    broker = broker_for([trigger("loop", f"{sink}/loop?reply={loop_type}", type_=loop_type)], ttl=5)
    before = len(attempts(sink, "/loop"))
    broker.send(loop_type)
    settle(lambda: broker.stats().get("dropped_ttl") == 1)
    assert len(attempts(sink, "/loop")) - before == 5


def test_nothing_is_dropped_under_1000_events(
    broker_for: Callable[..., RunningBroker], sink: str
) -> None:
    broker = broker_for([trigger("bulk", f"{sink}/bulk")])
    with httpx.Client() as client:
        sent = set()
        for i in range(1000):
            event = events.make(TYPE, "/tests", {"i": i})
            headers, body = events.to_binary(event)
            assert client.post(broker.ingress, headers=headers, content=body).status_code == 202
            sent.add(event["id"])
    settle(lambda: broker.stats().get("delivered", 0) >= 1000, 60)
    received = {a["headers"]["ce-id"] for a in attempts(sink, "/bulk")}
    assert sent <= received
    assert broker.stats().get("lost", 0) == 0


def test_structured_mode_is_accepted(broker_for: Callable[..., RunningBroker], sink: str) -> None:
    broker = broker_for([trigger("structured", f"{sink}/structured")])
    body = {"specversion": "1.0", "id": "s-1", "source": "/tests", "type": TYPE, "data": {"x": 1}}
    response = httpx.post(
        broker.ingress, json=body, headers={"Content-Type": "application/cloudevents+json"}
    )
    assert response.status_code == 202
    settle(lambda: any(a["headers"]["ce-id"] == "s-1" for a in attempts(sink, "/structured")))


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Type": "application/json"}, b'{"no": "attributes"}'),
        ({"ce-specversion": "1.0", "ce-type": TYPE}, b"{}"),  # no id, no source
        ({"Content-Type": "application/cloudevents+json"}, b"{not json"),
        ({"Content-Type": "application/cloudevents+json"}, b"[" * 100_000),  # was a 500
    ],
)
def test_bad_cloudevents_get_400(
    broker_for: Callable[..., RunningBroker], headers: dict[str, str], body: bytes
) -> None:
    broker = broker_for([])
    response = httpx.post(broker.ingress, headers=headers, content=body)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/problem+json"


def test_the_brokers_own_errors_are_problems(broker_for: Callable[..., RunningBroker]) -> None:
    """aiohttp's own answers (no such route, a method not allowed) were text/plain."""
    broker = broker_for([])
    for response in (httpx.get(broker.ingress), httpx.post(f"{broker.url}/a/b/c")):
        assert response.status_code in (404, 405)
        assert response.headers["Content-Type"] == "application/problem+json"


def test_unknown_broker_is_404(broker_for: Callable[..., RunningBroker]) -> None:
    broker = broker_for([])
    headers, body = events.to_binary(events.make(TYPE, "/tests", {}))
    assert httpx.post(f"{broker.url}/ns/nope", headers=headers, content=body).status_code == 404


def test_an_event_over_the_size_limit_is_413_and_goes_nowhere(
    broker_for: Callable[..., RunningBroker], sink: str
) -> None:
    """Was: a 10 MB event every subscriber would refuse was accepted with 202, then dropped."""
    broker = broker_for([trigger("all", f"{sink}/all")], max_event_bytes=64 * 1024)
    headers, body = events.to_binary(events.make(TYPE, "/tests", {"pad": "x" * 100_000}))
    sized = httpx.post(broker.ingress, headers=headers, content=body)
    chunked = httpx.post(
        broker.ingress, headers=headers, content=iter([body[:50_000], body[50_000:]])
    )
    for response in (sized, chunked):
        assert response.status_code == 413
        assert response.headers["Content-Type"] == "application/problem+json"
    broker.send(data={"pad": "x" * 1000})  # one under the limit still goes
    settle(lambda: broker.stats().get("delivered") == 1)
    assert broker.stats().get("accepted") == 1


def test_every_delivery_carries_a_token_for_its_destinations_audience(
    broker_for: Callable[..., RunningBroker], sink: str
) -> None:
    """As with Knative's authentication-oidc: the subscriber's token names the subscriber's
    audience, the dead-letter sink's its own, each signed by the issuer the broker serves
    (checked here as a subscriber checks it), each attempt its own; a destination with no
    audience gets none."""
    port = free_port()
    issuer = Issuer(f"http://127.0.0.1:{port}")
    keys = AppThread(issuer.app(), port=port)
    delivery = {
        "deadLetterSink": {"uri": f"{sink}/dls-signed", "audience": "the-dls"},
        "retry": 1,
        "backoffDelay": "PT0.1S",
    }
    signed = trigger("signed", f"{sink}/signed?fail=99", **delivery)
    signed["spec"]["subscriber"]["audience"] = "the-subscriber"
    broker = broker_for([signed, trigger("unsigned", f"{sink}/unsigned")], issuer=issuer)
    event_id = send_until_dead_lettered(broker)
    settle(lambda: len(deliveries(sink, "/unsigned", event_id)) == 1)
    assert "authorization" not in deliveries(sink, "/unsigned", event_id)[0]["headers"]
    tried = [a["headers"]["authorization"] for a in deliveries(sink, "/signed", event_id)]
    (dead,) = [a["headers"]["authorization"] for a in deliveries(sink, "/dls-signed", event_id)]
    assert len(set(tried)) == 2  # a token per attempt
    for audience, authorization in [("the-subscriber", t) for t in tried] + [("the-dls", dead)]:
        claims = EventVerifier(issuer.url, audience).verify(authorization)  # via discovery
        assert claims["sub"] == trigger_subject("ns", "signed")
    with pytest.raises(Unauthorized):  # the subscriber's token is not the sink's
        EventVerifier(issuer.url, "the-dls").verify(tried[0])
    keys.stop()
