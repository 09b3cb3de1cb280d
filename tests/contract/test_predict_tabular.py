"""Contract of the predictor serving an iris model: every endpoint, in-process, real model."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.helpers import PREDICT_SOURCE, function_client

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
PROBLEM = {"type", "title", "status", "detail", "instance"}


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = response.get_json(force=True)
    assert set(body) >= PROBLEM
    assert body["status"] == status
    assert body["instance"] == response.headers["X-Request-Id"]
    return body


def test_health(iris: FlaskClient) -> None:
    body = iris.get("/health").get_json()
    assert body["health"] == "ok"


def test_metadata_describes_model_and_outlier_detector(iris: FlaskClient) -> None:
    body = iris.get("/metadata").get_json()
    assert body["data_structure"] == "(1,4)"
    assert body["data_sample"] == [SETOSA]
    assert body["prediction_structure"] == "(1,3)"
    assert body["outlier_type"] == "bool, float32"
    assert body["outlier_sample"][0] is False
    assert (body["model"], body["version"]) == ("iris-svc", "1")


def test_label(iris: FlaskClient) -> None:
    assert iris.get("/label").get_json() == ["setosa", "versicolor", "virginica"]


def test_setosa_sample_is_setosa_with_high_probability(iris: FlaskClient) -> None:
    body = iris.get("/predict/test").get_json()
    assert body["prediction"][0] > 0.9
    assert body["is_outlier"] is False
    assert body["outlier_score"] > 0
    assert iris.get("/predict/test/label").get_json()["prediction"]["label"] == "setosa"


def test_one_row_answers_in_the_seed_shape(iris: FlaskClient) -> None:
    response = iris.post("/predict", json={"data": [VIRGINICA]}, headers={"X-Request-Id": "job-42"})
    body = response.get_json()
    assert response.headers["X-Request-Id"] == body["job_id"] == "job-42"
    assert (body["model"], body["version"]) == ("iris-svc", "1")
    assert len(body["prediction"]) == 3
    assert body["prediction"][2] > 0.9
    assert body["is_outlier"] is False


def test_n_rows_answer_a_list_of_n_results(iris: FlaskClient) -> None:
    body = iris.post("/predict", json={"data": [SETOSA, VIRGINICA, [1, 2, 3, 4]]}).get_json()
    assert [max(range(3), key=p.__getitem__) for p in body["prediction"][:2]] == [0, 2]
    assert body["is_outlier"] == [False, False, True]
    labels = iris.post("/predict/label", json={"data": [SETOSA, VIRGINICA]}).get_json()
    assert [p["label"] for p in labels["prediction"]] == ["setosa", "virginica"]


def test_1234_is_an_outlier(iris: FlaskClient) -> None:
    body = iris.post("/predict", json={"data": [[1, 2, 3, 4]]}).get_json()
    assert body["is_outlier"] is True
    assert body["outlier_score"] < 0


def test_request_id_is_made_when_absent(iris: FlaskClient) -> None:
    response = iris.get("/predict/test")
    assert len(response.headers["X-Request-Id"]) == 36
    assert response.get_json()["job_id"] == response.headers["X-Request-Id"]


def test_open_inference_protocol_v2(iris: FlaskClient) -> None:
    assert iris.get("/v2").get_json()["name"] == "ml-serving-functions"
    assert iris.get("/v2/health/live").get_json()["live"] is True
    assert iris.get("/v2/health/ready").get_json()["ready"] is True
    meta = iris.get("/v2/models/iris-svc").get_json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert iris.get("/v2/models/iris-svc/versions/1/ready").get_json()["ready"] is True
    request = {
        "id": "abc",
        "inputs": [
            {"name": "input", "shape": [2, 4], "datatype": "FP32", "data": SETOSA + VIRGINICA}
        ],
    }
    for path in ("/v2/models/iris-svc/infer", "/v2/models/iris-svc/versions/1/infer"):
        body = iris.post(path, json=request).get_json()
        assert body["id"] == "abc"
        assert body["model_name"] == "iris-svc"
        (output,) = body["outputs"]
        assert output["shape"] == [2, 3]
        assert output["datatype"] == "FP32"
        assert output["data"][0] > 0.9
        assert output["data"][5] > 0.9


def test_v2_unknown_model_or_version_is_404(iris: FlaskClient) -> None:
    assert_problem(iris.get("/v2/models/resnet"), 404)
    assert_problem(iris.get("/v2/models/iris-svc/versions/7"), 404)


def test_v2_bad_tensors_are_422(iris: FlaskClient) -> None:
    def infer(tensor: dict[str, Any]) -> Any:
        return iris.post("/v2/models/iris-svc/infer", json={"inputs": [tensor]})

    base = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": SETOSA}
    assert_problem(infer({**base, "shape": [1, 3]}), 422)
    assert_problem(infer({**base, "shape": [2, 2]}), 422)
    assert_problem(infer({**base, "name": "x"}), 422)
    assert_problem(infer({**base, "datatype": "BYTES"}), 422)
    assert_problem(infer({**base, "data": ["a", "b", "c", "d"]}), 422)


def test_v1_protocol(iris: FlaskClient) -> None:
    assert iris.get("/v1/models/iris-svc").get_json()["ready"] is True
    body = iris.post("/v1/models/iris-svc:predict", json={"instances": [SETOSA]}).get_json()
    assert body["predictions"][0][0] > 0.9
    assert_problem(iris.post("/v1/models/iris-svc:predict", json={"instances": [[1, 2]]}), 422)


def test_metrics_count_requests_per_model(iris: FlaskClient) -> None:
    iris.get("/predict/test")
    iris.post("/predict", json={"data": "nope"})
    text = iris.get("/metrics").get_data(as_text=True)
    assert (
        'mlf_requests_total{code="200",endpoint="predict_test",model="iris-svc",version="1"}'
        in text
    )
    assert (
        'mlf_request_errors_total{code="422",endpoint="predict",model="iris-svc",version="1"}'
        in text
    )
    assert "mlf_request_duration_seconds_bucket" in text


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"json": {"data": [[1, 2, 3]]}}, 422),  # wrong shape
        ({"json": {"data": [["a", 2, 3, 4]]}}, 422),  # wrong type
        ({"json": {"data": [[True, 2, 3, 4]]}}, 422),  # booleans are not numbers
        ({"json": {"data": []}}, 422),  # no rows
        ({"json": {"rows": [SETOSA]}}, 422),  # missing field
        ({"json": {"data": [SETOSA], "extra": 1}}, 422),  # unknown field
        ({"json": [SETOSA]}, 422),  # not an object
        ({"data": "", "content_type": "application/json"}, 400),  # empty body
        ({"data": "{'data': [[1,2,3,4]]}", "content_type": "application/json"}, 400),  # not JSON
        ({"data": '{"data": [[NaN, 1, 2, 3]]}', "content_type": "application/json"}, 422),
        ({"data": "data=1"}, 415),  # curl's default form content type
        ({"data": '{"data": [[1,2,3,4]]}', "content_type": "text/plain"}, 415),
    ],
)
def test_bad_input_gets_a_4xx_problem_and_the_service_stays_healthy(
    iris: FlaskClient, kwargs: dict[str, Any], status: int
) -> None:
    assert_problem(iris.post("/predict", **kwargs), status)
    assert iris.get("/predict/test").status_code == 200


def test_body_over_the_limit_is_413() -> None:
    with function_client(
        "predict", PREDICT_SOURCE, MODEL_NAME="iris-svc", MAX_BODY_BYTES="64"
    ) as client:
        assert_problem(client.post("/predict", json={"data": [SETOSA] * 10}), 413)
        assert client.post("/predict", json={"data": [SETOSA]}).status_code == 200


def test_too_many_rows_is_422() -> None:
    with function_client(
        "predict", PREDICT_SOURCE, MODEL_NAME="iris-svc", MAX_BATCH_ROWS="2"
    ) as client:
        assert_problem(client.post("/predict", json={"data": [SETOSA] * 3}), 422)


def test_unknown_route_and_wrong_method(iris: FlaskClient) -> None:
    assert_problem(iris.get("/predict/nothing"), 404)
    assert_problem(iris.get("/robots.txt"), 404)
    body = assert_problem(iris.get("/predict"), 405)
    assert "POST" in body["detail"]
    assert iris.get("/predict").headers["Allow"] == "POST"
    assert_problem(iris.delete("/health"), 405)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models/%2Fx"),  # werkzeug's merge_slashes would redirect (308)
        ("GET", "/v1/models//iris-svc"),
        ("POST", "/v1/models//iris-svc:predict"),
        ("GET", "/v2/models//iris-svc/ready"),
    ],
)
def test_a_path_matching_only_after_a_redirect_is_a_404_problem(
    iris: FlaskClient, method: str, path: str
) -> None:
    assert_problem(iris.open(path, method=method, json={"instances": [SETOSA]}), 404)
