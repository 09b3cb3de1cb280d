"""Contract of the prediction log's dead-letter Service and its replay command, in-process
over one store with the query API: what the broker dead-letters is spooled before the 202,
replayed into the store once (or set aside when it can never be a record), and the command
does the same by hand."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from flask.testing import FlaskClient

from functions.core import events, outbox
from functions.prediction_log.dead_letters import REPLAYED, STORED
from tests.contract.test_prediction_log import SOURCE, TOKEN, data, post_binary
from tests.helpers import function_client, poll_until


def dead_lettered(job: str, **changes: object) -> events.CloudEvent:
    """A prediction.logged event as the broker hands it to the dead-letter sink."""
    event = events.make(events.PREDICTION_LOGGED, "/functions/iris", data(job, **changes))
    event["knativeerrordest"] = "http://prediction-log-ingest.ml-serving.svc.cluster.local"
    event["knativeerrorcode"] = "0"
    event["knativeerrordata"] = base64.b64encode(b"TimeoutError").decode()
    return event


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "LOG_STORE_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}",
        "DEAD_LETTER_DIR": str(tmp_path / "dead-letters"),
        "API_TOKEN": TOKEN,
    }


@pytest.fixture
def log(env: dict[str, str]) -> Iterator[FlaskClient]:
    with function_client("prediction_log", SOURCE, **env) as client:
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
        yield client


def jobs(log: FlaskClient) -> list[str]:
    return sorted(r["job_id"] for r in log.get("/logs").get_json()["records"])


def rejected(env: dict[str, str]) -> list[dict[str, object]]:
    path = Path(env["DEAD_LETTER_DIR"]) / outbox.REJECTED_FILE
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def test_dead_letters_are_stored_once_and_bad_ones_kept_aside(
    env: dict[str, str], log: FlaskClient
) -> None:
    stored_before = STORED._value.get()
    with function_client("prediction_log_dead_letter", SOURCE, **env) as dead_letters:
        letters = [dead_lettered(f"late-{i}") for i in range(5)]
        for letter in [*letters, letters[0]]:  # the last a second dead letter of the same event
            assert post_binary(dead_letters, letter).status_code == 202
        poison = events.make(events.PREDICTION_LOGGED, "/functions/iris", {"job_id": "bad"})
        assert post_binary(dead_letters, poison).status_code == 202  # kept, never refused
        poll_until(lambda: len(jobs(log)) == 5 and rejected(env), 20, "the replay")
        metrics = dead_letters.get("/metrics").get_data(as_text=True)
    assert jobs(log) == [f"late-{i}" for i in range(5)]  # the redelivery stored no second one
    assert STORED._value.get() - stored_before == 5
    assert [e["id"] for e in rejected(env)] == [poison["id"]]
    assert "mlf_dead_letters_received_total" in metrics
    assert outbox.spooled_events(Path(env["DEAD_LETTER_DIR"])) == 0


def test_a_dead_letter_the_ingest_stored_late_is_not_stored_twice(
    env: dict[str, str], log: FlaskClient
) -> None:
    """The ingest answered after the broker gave up (a frozen store came back): both the
    late delivery and the dead letter reach the store, which keeps one."""
    event = dead_lettered("both")
    with function_client("prediction_log_ingest", SOURCE, **env) as ingest:
        assert post_binary(ingest, event).status_code == 202
    replayed = REPLAYED.labels(events.PREDICTION_LOGGED)._value.get()
    with function_client("prediction_log_dead_letter", SOURCE, **env) as dead_letters:
        assert post_binary(dead_letters, event).status_code == 202
        poll_until(
            lambda: REPLAYED.labels(events.PREDICTION_LOGGED)._value.get() > replayed, 20, "replay"
        )
    assert jobs(log) == ["both"]


def replay_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "functions.prediction_log.replay", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_replay_command_stores_what_the_service_left(
    env: dict[str, str], log: FlaskClient
) -> None:
    with function_client(
        "prediction_log_dead_letter", SOURCE, **env, DEAD_LETTER_REPLAY="false"
    ) as dead_letters:
        for i in range(3):
            assert post_binary(dead_letters, dead_lettered(f"hand-{i}")).status_code == 202
        post_binary(dead_letters, events.make(events.PREDICTION_LOGGED, "/x", {"job_id": "bad"}))
    assert jobs(log) == []  # replay off: they wait on disk
    done = replay_command(env)
    assert done.returncode == 0, done.stderr
    assert "replayed 1 rejected, 3 stored; 0 waiting" in done.stdout
    assert jobs(log) == ["hand-0", "hand-1", "hand-2"]
    again = replay_command(env, "--rejected")  # still no prediction log: rejected again
    assert "queued 1 rejected dead letter(s) again" in again.stdout
    assert "replayed 1 rejected; 0 waiting" in again.stdout
    assert len(rejected(env)) == 1


def test_the_replay_command_leaves_a_spool_a_live_service_replays(
    env: dict[str, str], log: FlaskClient
) -> None:
    with function_client("prediction_log_dead_letter", SOURCE, **env):
        poll_until(  # its replayer holds the spool's lock
            lambda: (Path(env["DEAD_LETTER_DIR"]) / ".sender.lock").exists(), 10, "the lock"
        )
        done = replay_command(env)
    assert done.returncode == 1
    assert "a running dead-letter Service holds the spool" in done.stdout
