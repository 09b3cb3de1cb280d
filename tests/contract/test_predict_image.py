"""Contract of the predictor serving the real ImageNet, LiteRT and plant models, in-process."""

from __future__ import annotations

import base64
import io

import pytest
from flask.testing import FlaskClient
from PIL import Image

from tests.contract.test_predict_tabular import assert_problem
from tests.helpers import sample_bytes

CAT_CLASSES = {"tiger cat", "Egyptian cat", "tabby", "Persian cat", "Siamese cat", "lynx"}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def top_k(client: FlaskClient, raw: bytes) -> list[str]:
    body = client.post("/predict", json={"image_data": b64(raw)}).get_json()
    return [entry["label"] for entry in body["top_k"]]


def test_cat_photo_top5_contains_a_cat(imagenet: FlaskClient) -> None:
    labels = top_k(imagenet, sample_bytes("cat.png"))
    assert len(labels) == 5
    assert labels[0] in CAT_CLASSES
    assert len(CAT_CLASSES & set(labels)) >= 2


def test_predict_answers_the_label_as_the_seed_does(imagenet: FlaskClient) -> None:
    body = imagenet.get("/predict/test").get_json()
    assert body["prediction"] in CAT_CLASSES
    assert 0 < body["proba"] <= 1
    assert (body["model"], body["version"]) == ("efficientnet-lite0", "1")
    label = imagenet.get("/predict/test/label").get_json()["prediction"]
    assert label["label"] == body["prediction"]


def test_metadata_and_labels(imagenet: FlaskClient) -> None:
    meta = imagenet.get("/metadata").get_json()
    assert (meta["data_type"], meta["data_structure"]) == ("str", "(1,1)")
    assert meta["prediction_structure"] == "(1,1000)"
    labels = imagenet.get("/label").get_json()
    assert len(labels) == 1000
    assert labels[281:286] == ["tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"]


def test_plant_model_says_background_for_the_cat_and_a_plant_for_the_flower(
    plant: FlaskClient,
) -> None:
    def label(raw: bytes) -> str:
        body = plant.post("/predict/label", json={"image_data": b64(raw)}).get_json()
        return str(body["prediction"]["label"])

    assert label(sample_bytes("cat.png")) == "background"
    assert label(sample_bytes("flower.jpg")) != "background"
    assert label(sample_bytes("china.jpg")) == "background"
    assert plant.get("/label").get_json()[0] == "background"


@pytest.mark.parametrize("sample", ["cat.png", "flower.jpg", "china.jpg"])
def test_onnx_and_litert_agree_on_top1(
    imagenet: FlaskClient, imagenet_tflite: FlaskClient, sample: str
) -> None:
    raw = sample_bytes(sample)
    onnx = imagenet.post("/predict", json={"image_data": b64(raw)}).get_json()
    litert = imagenet_tflite.post("/predict", json={"image_data": b64(raw)}).get_json()
    assert onnx["prediction"] == litert["prediction"]
    assert onnx["proba"] == pytest.approx(litert["proba"], abs=1e-3)


def test_grayscale_png_and_wrapped_base64_are_accepted(imagenet: FlaskClient) -> None:
    gray = io.BytesIO()
    Image.open(io.BytesIO(sample_bytes("cat.png"))).convert("L").save(gray, "PNG")
    wrapped = base64.encodebytes(gray.getvalue()).decode()  # newline every 76 characters
    response = imagenet.post("/predict", json={"image_data": wrapped})
    assert response.status_code == 200
    assert response.get_json()["prediction"]


def test_v2_infer_with_an_encoded_image_and_with_a_tensor(imagenet: FlaskClient) -> None:
    raw = b64(sample_bytes("cat.png"))
    body = imagenet.post(
        "/v2/models/efficientnet-lite0/infer",
        json={"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": [raw]}]},
    ).get_json()
    (output,) = body["outputs"]
    assert output["shape"] == [1, 1000]
    tensor = [0.0] * (3 * 224 * 224)
    body = imagenet.post(
        "/v2/models/resnet/infer",  # not the served model
        json={
            "inputs": [
                {"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32", "data": tensor}
            ]
        },
    )
    assert_problem(body, 404)
    body = imagenet.post(
        "/v2/models/efficientnet-lite0/infer",
        json={
            "inputs": [
                {"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32", "data": tensor}
            ]
        },
    ).get_json()
    assert sum(body["outputs"][0]["data"]) == pytest.approx(1.0, abs=1e-3)


def test_v1_predict_with_tf_serving_image_instances(imagenet: FlaskClient) -> None:
    raw = b64(sample_bytes("cat.png"))
    body = imagenet.post(
        "/v1/models/efficientnet-lite0:predict",
        json={"instances": [{"image_bytes": {"b64": raw}}, {"b64": raw}]},
    ).get_json()
    assert len(body["predictions"]) == 2
    assert len(body["predictions"][0]) == 1000


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"image_data": "!!! not base64 !!!"}, 422),
        ({"image_data": b64(b"GIF89a but not really an image")}, 422),
        ({"image_data": ""}, 422),
        ({"image_data": 42}, 422),
        ({"data": [[1, 2, 3, 4]]}, 422),  # a tabular body sent to an image model
        ({}, 422),
    ],
)
def test_bad_images_get_a_4xx_problem_and_the_service_stays_healthy(
    imagenet: FlaskClient, body: dict[str, object], status: int
) -> None:
    assert_problem(imagenet.post("/predict", json=body), status)
    assert_problem(imagenet.post("/predict/label", json=body), status)
    assert imagenet.get("/predict/test").status_code == 200
