"""A stock Open Inference Protocol (V2) client — Triton's ``tritonclient.http`` — against the
predictor served by the production server, unchanged (JSON tensors: the binary-data
extension is not offered, and ``GET /v2`` lists no extensions)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import pytest

from tests.helpers import PREDICT_SOURCE, free_port, server

pytestmark = pytest.mark.e2e
httpclient = pytest.importorskip("tritonclient.http")


@pytest.fixture(scope="module")
def iris_url() -> Iterator[str]:
    port = free_port()
    env = {
        "FUNCTION_TARGET": "predict",
        "FUNCTION_SOURCE": PREDICT_SOURCE,
        "MODEL_NAME": "iris-svc",
    }
    command = [sys.executable, "-m", "functions.core.serve", "--host=127.0.0.1", f"--port={port}"]
    with server(command, env, f"http://127.0.0.1:{port}/v2/health/ready"):
        yield f"127.0.0.1:{port}"


def test_triton_http_client(iris_url: str) -> None:
    client = httpclient.InferenceServerClient(url=iris_url)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("iris-svc")
        assert client.get_server_metadata()["name"] == "ml-serving-functions"
        metadata = client.get_model_metadata("iris-svc")
        assert metadata["inputs"][0]["name"] == "input"
        rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
        tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=False)
        wanted = httpclient.InferRequestedOutput("probabilities", binary_data=False)
        result = client.infer("iris-svc", [tensor], outputs=[wanted], request_id="v2-client-1")
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (2, 3)
        assert probabilities.argmax(axis=1).tolist() == [0, 2]
        assert result.get_response()["id"] == "v2-client-1"
    finally:
        client.close()
