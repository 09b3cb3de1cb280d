"""What the predictor logs of each request, in-process: the records it spools to its outbox
(a K_SINK makes it record; OUTBOX_SENDER=process leaves them in the spool to read)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask.testing import FlaskClient

from tests.helpers import PREDICT_SOURCE, function_client, sample_bytes

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]


def recording(outbox: Path, model: str, **env: str) -> AbstractContextManager[FlaskClient]:
    return function_client(
        "predict",
        PREDICT_SOURCE,
        MODEL_NAME=model,
        K_SERVICE="records",
        K_SINK="http://127.0.0.1:9/",
        OUTBOX_DIR=str(outbox),
        OUTBOX_SENDER="process",
        **env,
    )


def records(outbox: Path) -> Iterator[dict[str, Any]]:
    for spool in sorted((outbox / "records").glob("spool-*.jsonl")):
        for line in spool.read_bytes().splitlines():
            yield orjson.loads(line)["data"]


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    return tmp_path / "outbox"


def test_a_tabular_prediction_logs_its_rows_answer_labels_and_outliers(outbox: Path) -> None:
    rows = {"data": [SETOSA, VIRGINICA, [1, 2, 3, 4]]}
    with recording(outbox, "iris-svc", OUTLIER_MODEL="iris-outlier", VARIANT="svc") as iris:
        answer = iris.post("/predict", json=rows, headers={"X-Request-Id": "r-1"}).get_json()
        iris.post("/predict/label", json={"data": [VIRGINICA]}, headers={"X-Request-Id": "r-2"})
        iris.get("/health")  # not a prediction: not logged
    first, second = records(outbox)
    assert (first["job_id"], first["endpoint"], first["input"]) == ("r-1", "predict", rows)
    assert first["output"] == {"prediction": answer["prediction"], "mode": "svc"}
    assert first["label"] == ["setosa", "virginica", "setosa"]  # each row's argmax
    assert (first["is_outlier"], first["outlier_score"]) == (
        [False, False, True],
        answer["outlier_score"],
    )
    assert (first["variant"], first["model"]) == ("svc", "iris-svc")
    assert "assignment" not in first  # no ROUTE: no A/B route to report on
    assert second["label"] == "virginica"
    assert second["output"]["prediction"]["label"] == "virginica"


def test_a_refused_request_logs_its_input_and_error(outbox: Path) -> None:
    with recording(outbox, "iris-svc") as iris:
        iris.post("/predict", json={"data": [[1, 2, 3]]}, headers={"X-Request-Id": "bad-1"})
        iris.post("/predict", data="data=1", headers={"X-Request-Id": "bad-2"})  # 415: unread
    bad, unread = records(outbox)
    assert (bad["status"], bad["input"]) == (422, {"data": [[1, 2, 3]]})
    assert bad["error"] == "1 validation error(s) for TabularRequest"
    assert not {"output", "label"} & set(bad)
    assert unread["status"] == 415
    assert "input" not in unread


def test_an_ab_variant_logs_how_each_request_reached_it(outbox: Path) -> None:
    """The route marks every request it routes; an unmarked one called the variant directly
    (it was logged as split, A/B traffic)."""
    with recording(outbox, "iris-svc", ROUTE="ab-test", VARIANT="svc") as iris:
        for marked in ("forced", "Sticky", "split", "anything", None):
            iris.get("/predict/test", headers={"X-AB-Assignment": marked} if marked else {})
        iris.get("/v1/models/nope", headers={"X-AB-Assignment": "forced"})  # not a prediction
        iris.post("/v1/models/iris-svc:predict", json={"instances": [SETOSA]})
    logged = list(records(outbox))
    assert [r["assignment"] for r in logged] == [
        "forced", "sticky", "split", "direct", "direct", "direct"
    ]  # fmt: skip
    assert {r["route"] for r in logged} == {"ab-test"}
    assert [r["input"] for r in logged[:5]] == ["sample"] * 5
    v1 = logged[5]
    assert list(v1["output"]) == ["predictions"]
    assert "label" not in v1  # the protocols' answers name no label


def test_an_image_prediction_logs_the_label_it_answered(outbox: Path) -> None:
    image = {"image_data": base64.b64encode(sample_bytes("flower.jpg")).decode()}
    with recording(outbox, "efficientnet-lite0", MODEL_THREADS="2", TOP_K="3") as imagenet:
        answer = imagenet.post("/predict", json=image).get_json()
        imagenet.get("/predict/test/label")
    large, sample = records(outbox)
    assert large["label"] == answer["prediction"]
    assert large["output"]["top_k"] == answer["top_k"]
    assert set(large["input"]) == {"sha256", "bytes"}  # over 16 KiB: by reference
    assert (sample["input"], sample["endpoint"]) == ("sample", "predict_test_label")
    assert sample["label"] == sample["output"]["prediction"]["label"]
