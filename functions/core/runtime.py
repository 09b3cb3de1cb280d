"""Model runtimes behind one small interface: ONNX Runtime and LiteRT.

``load_predictor`` verifies the artifact against its card (sha256, input and output names)
and caches one predictor per (card, threads) in the process; tests reset it with
``load_predictor.cache_clear()``. LiteRT (``ai-edge-litert``) stands in for
``tflite-runtime``, whose Interpreter breaks under numpy 2. ONNX Runtime is imported with
its telemetry off (``onnxruntime_without_telemetry``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from functions.core.cards import ModelCard
from functions.core.errors import ModelLoadError
from functions.core.settings import disable_runtime_telemetry


class Predictor(Protocol):
    """A loaded model: float32 batch in, float32 batch out."""

    card: ModelCard
    labels: tuple[str, ...]

    def predict(self, inputs: np.ndarray) -> np.ndarray: ...


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _verified(model_dir: Path, relative: str, expected: str | None, what: str) -> Path:
    path = model_dir / relative
    if not path.is_file():
        raise ModelLoadError(f"{what} {path} is missing: run `make models`")
    if expected is not None and (actual := sha256_of(path)) != expected:
        raise ModelLoadError(f"{what} {path} has sha256 {actual}, its card says {expected}")
    return path


def _labels(card: ModelCard, model_dir: Path) -> tuple[str, ...]:
    if card.labels is None:
        return ()
    if card.labels.names is not None:
        return card.labels.names
    assert card.labels.file is not None
    path = _verified(model_dir, card.labels.file, card.labels.sha256, "labels file")
    return tuple(json.loads(path.read_text()))


def _check_names(card: ModelCard, inputs: list[str], outputs: list[str]) -> None:
    if card.input.name not in inputs or card.output.name not in outputs:
        raise ModelLoadError(
            f"model {card.name}: card declares input {card.input.name!r} and output "
            f"{card.output.name!r}, the file has inputs {inputs} and outputs {outputs}"
        )


@functools.cache
def onnxruntime_without_telemetry() -> Any:
    """The ``onnxruntime`` module with its telemetry off. Since 1.31 its import opens a
    telemetry store under ``~/.cache/Microsoft`` (and logs a failure where HOME is read-only,
    as in the image) unless ``ORT_DISABLE_TELEMETRY`` is set first; the Python switch stops
    the events of a process that imported it before us."""
    disable_runtime_telemetry()
    import onnxruntime

    onnxruntime.disable_telemetry_events()
    return onnxruntime


class OnnxPredictor:
    """ONNX Runtime session; ``run`` is thread-safe, so no lock."""

    def __init__(self, card: ModelCard, path: Path, labels: tuple[str, ...], threads: int) -> None:
        ort = onnxruntime_without_telemetry()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        _check_names(
            card,
            [i.name for i in self._session.get_inputs()],
            [o.name for o in self._session.get_outputs()],
        )
        self.card, self.labels = card, labels
        self._feeds, self._outputs = card.input.name, [card.output.name]

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        result: np.ndarray = self._session.run(self._outputs, {self._feeds: inputs})[0]
        return result


class TfLitePredictor:
    """LiteRT interpreter; it is not thread-safe and has a fixed batch, so rows run one by one."""

    def __init__(self, card: ModelCard, path: Path, labels: tuple[str, ...], threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self._interpreter.allocate_tensors()
        (inp,) = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        # Converters rename tensors (e.g. "serving_default_input:0"), so the card's names
        # match by the signature when present, else positionally.
        signature = self._interpreter.get_signature_list().get("serving_default", {})
        _check_names(
            card,
            list(signature.get("inputs", [])) or [card.input.name],
            list(signature.get("outputs", [])) or [card.output.name],
        )
        self.card, self.labels = card, labels
        self._input_index, self._output_index = inp["index"], outputs[0]["index"]
        self._lock = threading.Lock()

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        rows = []
        with self._lock:
            for row in inputs:
                self._interpreter.set_tensor(self._input_index, row[np.newaxis])
                self._interpreter.invoke()
                rows.append(self._interpreter.get_tensor(self._output_index)[0].copy())
        return np.stack(rows)


@functools.cache
def load_predictor(card: ModelCard, model_dir: Path, threads: int) -> Predictor:
    """Load, verify and cache the model a card describes."""
    path = _verified(model_dir, card.file, card.sha256, f"model {card.name}:")
    labels = _labels(card, model_dir)
    runtime = OnnxPredictor if card.runtime == "onnx" else TfLitePredictor
    try:
        return runtime(card, path, labels, threads)
    except ModelLoadError:
        raise
    except Exception as e:  # the runtimes raise their own untyped errors on bad files
        raise ModelLoadError(f"model {card.name}: {path} does not load: {e}") from e
