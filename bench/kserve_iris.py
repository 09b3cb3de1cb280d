"""The peer in `make bench`: KServe's Python model server serving the same iris ONNX file.

Runs with the peer's own interpreter (``.venv-peer``, made by ``bench/peer.py``), never the
project's:

    .venv-peer/bin/python bench/kserve_iris.py --model_path build/models/iris-svc.onnx \\
        --model_name iris --http_port 8080 --grpc_port 8081 --workers 2

Everything else is KServe's default: its REST server (FastAPI on uvicorn), its gRPC server,
its logging (an access line and latency lines per request), its multi-process mode. The model
is the smallest ``kserve.Model`` a KServe user would write for an ONNX file: onnxruntime with
one intra-op thread, as the project's predictor runs it (``MODEL_THREADS=1``).
"""

from __future__ import annotations

import argparse
from typing import Any

import kserve
import numpy as np
import onnxruntime as ort


class IrisModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.session: Any = None
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.ready = True
        return True

    # With --workers > 1 KServe pickles the registered models into each spawned worker; an
    # onnxruntime session does not pickle, so each worker opens the file again.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "session": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.load()

    def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        x = np.asarray(payload["instances"], dtype=np.float32)
        probabilities = self.session.run(["probabilities"], {"input": x})[0]
        return {"predictions": probabilities.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    kserve.ModelServer().start([IrisModel(args.model_name, args.model_path)])


if __name__ == "__main__":  # the spawned workers import this file too
    main()
