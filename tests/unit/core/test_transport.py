"""The event transport: the HTTP sink against a real HTTP/1.1 server on loopback (structured
mode over one keep-alive connection, refusals), reading an event from any delivery (a Pub/Sub
push envelope included), and the sink the settings select."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from functions.core import events, transport
from functions.core.client import Client
from functions.core.errors import BadRequest, ServiceUnavailable
from functions.core.outbox import SPOOLED, Sender, Writer
from functions.core.settings import EventSettings
from tests.helpers import CountingHandler, free_port, http_server


class Recorded(CountingHandler):
    """A sink: takes every POST but to /refuse (503) and /<status> (that status); a GET is
    not allowed (as an ingress)."""

    def do_POST(self) -> None:
        self.read_request()
        status = self.path.strip("/")
        self.answer(503 if status == "refuse" else int(status) if status.isdigit() else 202)

    def do_GET(self) -> None:
        self.answer(405)


@pytest.fixture
def sink() -> Iterator[str]:
    with http_server(Recorded) as url:
        yield url


def line(i: int) -> bytes:
    return orjson.dumps({"specversion": "1.0", "id": f"e-{i}", "type": "t.v1", "data": {"i": i}})


def test_spooled_lines_go_as_they_are_over_one_connection(sink: str, client: Client) -> None:
    http = transport.HttpSink(f"{sink}/events?x=1", client)
    for i in range(20):
        http.send(line(i))
    assert Recorded.connections == 1
    assert [body for *_, body in Recorded.seen] == [line(i) for i in range(20)]
    assert {(path, h["Content-Type"]) for _, path, h, _ in Recorded.seen} == {
        ("/events?x=1", "application/cloudevents+json")
    }


def test_a_published_event_goes_in_structured_mode_with_its_job_id(
    sink: str, client: Client
) -> None:
    made = events.make(events.INFERENCE_REQUESTED, "/s", {"a": 1}, **{events.JOB_ID: "j-1"})
    transport.HttpSink(sink, client).publish(made)
    _, _, headers, body = Recorded.seen[0]
    assert headers["X-Request-Id"] == "j-1"
    received = events.parse(headers, body)
    assert (received["id"], received["jobid"], received.data) == (made["id"], "j-1", {"a": 1})
    raw = events.make(events.INFERENCE_REQUESTED, "/s", b"\x00\xff")  # bytes: data_base64
    assert events.parse({}, events.to_structured(raw)).data == b"\x00\xff"


def test_a_refusal_is_a_503_and_the_next_event_still_goes(sink: str, client: Client) -> None:
    refused = transport.HttpSink(f"{sink}/refuse", client)
    for i in range(2):
        with pytest.raises(ServiceUnavailable, match="answered 503"):
            refused.send(line(i))
    assert Recorded.connections == 1  # the answer was read whole: the connection was kept
    assert refused.health() == "ok"  # it is there, only refusing
    down = transport.HttpSink(f"http://127.0.0.1:{free_port()}/", client, seconds=2)
    with pytest.raises(ServiceUnavailable, match="ConnectionRefusedError"):
        down.send(line(0))
    assert down.health() == "unreachable: ConnectionRefusedError"


@pytest.mark.parametrize("status", [400, 413, 415, 422])
def test_a_4xx_no_retry_can_change_is_refused_for_good(
    sink: str, client: Client, status: int
) -> None:
    with pytest.raises(transport.Refused, match=f"answered {status}"):
        transport.HttpSink(f"{sink}/{status}", client).send(line(0))


@pytest.mark.parametrize("status", [404, 408, 409, 429, 500, 503])
def test_a_sink_starting_or_busy_is_a_503_to_retry(sink: str, client: Client, status: int) -> None:
    with pytest.raises(ServiceUnavailable) as refused:
        transport.HttpSink(f"{sink}/{status}", client).send(line(0))
    assert not isinstance(refused.value, transport.Refused)


def test_the_sender_drains_the_outbox_through_the_sink(
    tmp_path: Path, sink: str, client: Client
) -> None:
    writer = Writer(tmp_path, max_bytes=1 << 20)
    for i in range(7):
        writer.emit({"specversion": "1.0", "id": f"e-{i}", "type": "t.v1"})
    assert not Sender(tmp_path, transport.HttpSink(f"{sink}/refuse", client).send).drain()
    assert SPOOLED._value.get() == 7
    assert Sender(tmp_path, transport.HttpSink(f"{sink}/events", client).send).drain()
    assert SPOOLED._value.get() == 0
    assert len([path for _, path, *_ in Recorded.seen if path == "/events"]) == 7


def push_envelope(data: bytes, **extra: object) -> bytes:
    attributes = {
        "ce-id": "1",
        "ce-type": events.INFERENCE_REQUESTED,
        "ce-source": "/s",
        "ce-specversion": "1.0",
        "content-type": "application/json",
        "other": "dropped",
    }
    message = {"data": base64.b64encode(data).decode(), "attributes": attributes} | extra
    return orjson.dumps({"message": message, "subscription": "projects/p/subscriptions/s"})


def test_a_push_envelope_is_read_where_the_subscriber_takes_one() -> None:
    envelope = push_envelope(orjson.dumps({"job_id": "j"}))
    event = transport.receive({"Content-Type": "application/json"}, envelope, push=True)
    assert (event["id"], event.data) == ("1", {"job_id": "j"})
    assert "other" not in events.attributes(event)
    with pytest.raises(BadRequest, match="not a valid CloudEvent"):
        transport.receive({"Content-Type": "application/json"}, envelope)  # push not taken
    broken = orjson.dumps({"message": {"data": "%%%"}, "subscription": "s"})
    with pytest.raises(BadRequest, match="not a Pub/Sub push envelope"):
        transport.receive({}, broken, push=True)


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_an_http_event_is_read_as_it_came(mode: str) -> None:
    made = events.make(events.INFERENCE_REQUESTED, "/s", {"subscription": 1})
    if mode == "binary":
        headers, body = events.to_binary(made)
    else:
        headers = {"Content-Type": "application/cloudevents+json"}
        body = events.to_structured(made)
    event = transport.receive(headers, body, push=True)
    assert (event["id"], event.data) == (made["id"], {"subscription": 1})


def test_the_sink_is_the_one_the_settings_select() -> None:
    with pytest.raises(ValueError, match="K_SINK"):
        transport.sink_for(EventSettings())
    http = transport.sink_for(EventSettings(k_sink="http://x"))
    assert isinstance(http, transport.HttpSink)
    assert http.url == "http://x"
