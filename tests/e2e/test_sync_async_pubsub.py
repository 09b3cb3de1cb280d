"""Sync-async over Google Cloud Pub/Sub: the proxy publishes to a topic of the gcloud
emulator, a push subscription delivers to the worker; real processes throughout."""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, sample_bytes, server, wait_for
from tests.pubsub_emulator import pubsub_emulator

pytestmark = pytest.mark.e2e
PROJECT, TOPIC, SUBSCRIPTION = "sync-async-test", "inference-requested", "async-worker"
SERVE = [sys.executable, "-m", "functions.core.serve"]


def function(stack: ExitStack, name: str, source: str, target: str, **env: str) -> str:
    port = free_port()
    base = {"PORT": str(port), "K_SERVICE": name, "FUNCTION_SOURCE": source}
    stack.enter_context(
        server(SERVE, {**base, "FUNCTION_TARGET": target, **env}, f"http://127.0.0.1:{port}/health")
    )
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[str]:
    with pubsub_emulator() as host, ExitStack() as stack:
        os.environ["PUBSUB_EMULATOR_HOST"] = host  # the test's own client (restored after)
        from google.cloud import pubsub_v1

        common = {"JOB_STORE_URL": f"sqlite:///{tmp_path / 'jobs.sqlite3'}"}
        fast = function(
            stack, "imagenet", "functions/predict/main.py", "predict",
            MODEL_NAME="efficientnet-lite0",
        )  # fmt: skip
        worker = function(
            stack, "async-worker", "functions/async_worker/main.py", "async_worker", **common
        )
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        topic = publisher.topic_path(PROJECT, TOPIC)
        publisher.create_topic(name=topic)
        subscriber.create_subscription(
            request={
                "name": subscriber.subscription_path(PROJECT, SUBSCRIPTION),
                "topic": topic,
                "push_config": {"push_endpoint": worker + "/"},
                # As a Trigger's filter: the topic also carries the proxy's prediction logs.
                "filter": 'attributes.ce-type = "dev.mlserving.inference.requested.v1"',
            }
        )
        subscriber.close()
        publisher.transport.close()
        yield function(
            stack, "sync-async", "functions/sync_async/main.py", "sync_async",
            FAST_URL=fast, SLOW_URL=worker, EVENT_TRANSPORT="pubsub",
            PUBSUB_PROJECT=PROJECT, PUBSUB_TOPIC=TOPIC, PUBSUB_EMULATOR_HOST=host,
            INLINE_MAX_BYTES="1000", **common,
        )  # fmt: skip


def test_the_whole_flow_over_pubsub_ends_done(proxy: str) -> None:
    image = {"image_data": base64.b64encode(sample_bytes("cat.png")).decode()}
    answer = httpx.post(
        f"{proxy}/predict", json=image, headers={"X-Request-Id": "ps-1"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["efficientnet-lite0"]

    def done() -> dict[str, str] | None:
        entry: dict[str, str] = httpx.get(f"{proxy}/job/ps-1").json()["ps-1"]
        return entry if entry["status"] != "pending" else None

    entry = wait_for(done, 60, "the job to end over Pub/Sub")
    assert entry["status"] == "done", entry
    assert entry["prediction"] in {"tabby", "tiger cat", "Persian cat", "Egyptian cat"}
    health = httpx.get(f"{proxy}/health/all").json()
    assert health["event_sink"] == "ok"
    assert health["efficientnet-lite2"] == "ok"


def test_prediction_logs_travel_over_pubsub_too(tmp_path: Path) -> None:
    """The same transport switch carries the prediction log: a predictor with
    EVENT_TRANSPORT=pubsub publishes one prediction.logged message per prediction."""
    with pubsub_emulator() as host, ExitStack() as stack:
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        from google.cloud import pubsub_v1

        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        topic = publisher.topic_path(PROJECT, "predictions")
        publisher.create_topic(name=topic)
        subscription = subscriber.subscription_path(PROJECT, "prediction-log")
        subscriber.create_subscription(request={"name": subscription, "topic": topic})
        iris = function(
            stack, "iris", "functions/predict/main.py", "predict", MODEL_NAME="iris-svc",
            EVENT_TRANSPORT="pubsub", PUBSUB_PROJECT=PROJECT, PUBSUB_TOPIC="predictions",
            PUBSUB_EMULATOR_HOST=host, OUTBOX_DIR=str(tmp_path / "outbox"),
        )  # fmt: skip
        sent = {f"ps-{i}" for i in range(10)}
        for rid in sent:
            response = httpx.post(
                f"{iris}/predict",
                json={"data": [[5.1, 3.5, 1.4, 0.2]]},
                headers={"X-Request-Id": rid},
            )
            assert response.status_code == 200
        received: set[str] = set()

        def pulled() -> bool | None:
            reply = subscriber.pull(
                request={"subscription": subscription, "max_messages": 50}, timeout=5
            )
            for message in reply.received_messages:
                assert message.message.attributes["ce-type"] == "dev.mlserving.prediction.logged.v1"
                received.add(message.message.attributes["ce-jobid"])
            if reply.received_messages:
                subscriber.acknowledge(
                    request={
                        "subscription": subscription,
                        "ack_ids": [m.ack_id for m in reply.received_messages],
                    }
                )
            return True if received >= sent else None

        wait_for(pulled, 60, "the prediction logs on the Pub/Sub topic")
        subscriber.close()
        publisher.transport.close()
