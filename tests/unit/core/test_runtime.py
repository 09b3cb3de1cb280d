"""Model cards and runtimes: verification against the card, on real built models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from functions.core.cards import all_cards, load_card
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


def test_every_card_is_valid_and_names_a_built_file() -> None:
    cards = all_cards(CARDS)
    assert {c.name for c in cards} >= {"iris-svc", "iris-rf", "iris-outlier", "iris-setosa"}
    for card in cards:
        assert (MODEL_DIR / card.file).is_file(), card.name
        assert len(card.sha256) == 64, card.name


def test_unknown_card_lists_the_known_ones() -> None:
    with pytest.raises(ModelLoadError, match="known models: .*iris-svc"):
        load_card(CARDS, "no-such-model")


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
