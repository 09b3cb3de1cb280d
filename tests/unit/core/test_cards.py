"""Model cards: every card the project ships is valid and names a built file."""

from __future__ import annotations

import pytest

from functions.core.cards import all_cards, load_card
from functions.core.errors import ModelLoadError
from functions.core.settings import REPO_ROOT
from tests.helpers import MODEL_DIR

CARDS = REPO_ROOT / "models"


def test_every_card_is_valid_and_names_a_built_file() -> None:
    cards = all_cards(CARDS)
    assert {c.name for c in cards} >= {"iris-svc", "iris-rf", "iris-outlier", "iris-setosa"}
    for card in cards:
        assert (MODEL_DIR / card.file).is_file(), card.name
        assert len(card.sha256) == 64, card.name


def test_unknown_card_lists_the_known_ones() -> None:
    with pytest.raises(ModelLoadError, match="known models: .*iris-svc"):
        load_card(CARDS, "no-such-model")
