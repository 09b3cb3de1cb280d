"""Runtimes: each model verified against its card as it loads, on real built models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from functions.core.cards import load_card
from functions.core.errors import ModelLoadError
from functions.core.runtime import load_predictor
from functions.core.settings import REPO_ROOT
from tests.helpers import MODEL_DIR

CARDS = REPO_ROOT / "models"


def copy_card(tmp_path: Path, name: str, text_edit: tuple[str, str] | None = None) -> Path:
    target = tmp_path / "cards" / name
    target.mkdir(parents=True)
    text = (CARDS / name / "model.toml").read_text()
    if text_edit:
        text = text.replace(*text_edit)
    (target / "model.toml").write_text(text)
    return tmp_path / "cards"


@pytest.mark.usefixtures("fresh_predictors")
def test_a_tampered_file_fails_its_checksum(tmp_path: Path) -> None:
    card = load_card(CARDS, "iris-svc")
    (tmp_path / card.file).write_bytes((MODEL_DIR / card.file).read_bytes() + b"\0")
    with pytest.raises(ModelLoadError, match="sha256"):
        load_predictor(card, tmp_path, 1)


@pytest.mark.usefixtures("fresh_predictors")
def test_a_missing_file_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="make models"):
        load_predictor(load_card(CARDS, "iris-svc"), tmp_path, 1)


@pytest.mark.usefixtures("fresh_predictors")
def test_card_and_graph_names_must_agree(tmp_path: Path) -> None:
    cards = copy_card(tmp_path, "iris-svc", ('name = "input"', 'name = "features"'))
    with pytest.raises(ModelLoadError, match="'features'.*inputs \\['input'\\]"):
        load_predictor(load_card(cards, "iris-svc"), MODEL_DIR, 1)


@pytest.mark.usefixtures("fresh_predictors")
def test_a_predictor_is_loaded_once_per_process() -> None:
    card = load_card(CARDS, "iris-rf")
    assert load_predictor(card, MODEL_DIR, 1) is load_predictor(card, MODEL_DIR, 1)


def test_onnx_batch_matches_row_by_row() -> None:
    model = load_predictor(load_card(CARDS, "iris-svc"), MODEL_DIR, 1)
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], np.float32)
    batch = model.predict(x)
    rows = np.concatenate([model.predict(row[np.newaxis]) for row in x])
    np.testing.assert_allclose(batch, rows, rtol=1e-5)
    np.testing.assert_allclose(batch.sum(axis=1), 1.0, rtol=1e-5)


TELEMETRY_STORE = Path(".cache", "Microsoft")  # where onnxruntime >= 1.31 keeps its device id


def run_python(code: str, home: Path) -> None:
    # As on a user's machine: onnxruntime keeps no telemetry store where CI is set.
    env = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith(("ORT_", "XDG_"))}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env={**env, "HOME": str(home)},
        check=False, timeout=60, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_onnx_runtime_runs_no_telemetry(tmp_path: Path) -> None:
    bare, ours = tmp_path / "bare", tmp_path / "ours"
    run_python("import onnxruntime", bare)
    if not (bare / TELEMETRY_STORE).exists():
        pytest.skip("this onnxruntime keeps no telemetry store: nothing to turn off")
    run_python(
        "from functions.core.cards import load_card\n"
        "from functions.core.runtime import load_predictor\n"
        "from pathlib import Path\n"
        f"load_predictor(load_card(Path({str(CARDS)!r}), 'iris-svc'), Path({str(MODEL_DIR)!r}), 1)\n"
        "import os; assert os.environ['ORT_DISABLE_TELEMETRY'] == '1'",
        ours,
    )
    assert not (ours / TELEMETRY_STORE).exists()
