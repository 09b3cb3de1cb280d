"""The input codecs, on the real cards: how each kind of model reads a request and answers."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from functions.core.cards import load_card
from functions.core.codecs import (
    ImageCodec,
    TabularCodec,
    codec_for,
    label_name,
    ranked,
    top_label,
)
from functions.core.errors import ModelLoadError, ValidationFailed
from functions.core.settings import REPO_ROOT
from tests.helpers import MODEL_DIR, sample_bytes

CARDS = REPO_ROOT / "models"
SETOSA = [5.1, 3.5, 1.4, 0.2]
LABELS = ("setosa", "versicolor", "virginica")


@pytest.fixture(scope="module")
def rows() -> TabularCodec:
    return TabularCodec.of(load_card(CARDS, "iris-svc"), max_rows=2)


@pytest.fixture(scope="module")
def images() -> ImageCodec:
    return ImageCodec.of(load_card(CARDS, "efficientnet-lite0"), MODEL_DIR)


def body(value: object) -> bytes:
    return orjson.dumps(value)


def test_the_card_kind_picks_the_codec() -> None:
    assert isinstance(codec_for(load_card(CARDS, "plant"), MODEL_DIR, 8), ImageCodec)
    for name in ("iris-svc", "iris-outlier"):
        assert isinstance(codec_for(load_card(CARDS, name), MODEL_DIR, 8), TabularCodec)


def test_rows_decode_to_a_float32_batch(rows: TabularCodec) -> None:
    x = rows.decode(body({"data": [SETOSA, [1, 2, 3, 4]]}))
    assert x.dtype == np.float32
    assert x.tolist() == np.asarray([SETOSA, [1, 2, 3, 4]], np.float32).tolist()
    assert rows.decode_instances([SETOSA]).shape == (1, 4)


@pytest.mark.parametrize(
    "value",
    [
        {"data": [[1, 2, 3]]},  # the card has four features
        {"data": [SETOSA] * 3},  # over the row limit
        {"data": []},
        {"data": [[True, 2, 3, 4]]},
        {"data": [[1e39, 2, 3, 4]]},  # no float32
        {"data": [SETOSA], "extra": 1},
    ],
)
def test_rows_that_do_not_fit_the_card_are_422(rows: TabularCodec, value: object) -> None:
    with pytest.raises(ValidationFailed) as refused:
        rows.decode(body(value))
    assert refused.value.errors


def test_v1_instances_get_the_same_checks_as_rows(rows: TabularCodec) -> None:
    with pytest.raises(ValidationFailed, match="TabularRequest"):
        rows.decode_instances([[1, 2]])
    assert rows.decode_bytes(["aGk="]) is None  # numeric tensors only


def test_the_tabular_sample_and_description_are_the_cards(rows: TabularCodec) -> None:
    assert rows.sample.tolist() == np.asarray([SETOSA], np.float32).tolist()
    assert not rows.sample.flags.writeable  # shared by every request
    assert rows.describe() == {
        "data_type": "float32",
        "data_structure": "(1,4)",
        "data_sample": ((5.1, 3.5, 1.4, 0.2),),
    }


def test_rows_answer_probabilities_and_name_each_rows_argmax(rows: TabularCodec) -> None:
    one = rows.answer(np.asarray([[0.1, 0.7, 0.2]], np.float32), LABELS, 5)
    assert one.fields == {"prediction": pytest.approx([0.1, 0.7, 0.2])}
    assert one.label == "versicolor"
    two = rows.answer(np.asarray([[0.9, 0.05, 0.05], [0.1, 0.2, 0.7]], np.float32), LABELS, 5)
    assert len(two.fields["prediction"]) == 2
    assert two.label == ["setosa", "virginica"]
    assert rows.answer(np.asarray([[0.4, 0.4, 0.2]], np.float32), LABELS, 5).label == "setosa"
    assert rows.answer(np.asarray([[0.4]], np.float32), (), 5).label == "0"  # no names


def test_an_image_decodes_as_the_card_preprocesses_it(images: ImageCodec) -> None:
    raw = sample_bytes("cat.png")
    text = base64.b64encode(raw).decode()
    x = images.decode(body({"image_data": text}))
    assert x.shape == (1, 3, 224, 224)
    assert np.array_equal(x, images.image(raw))
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert np.array_equal(
        images.decode(body({"image_data": f"data:image/png;base64,{wrapped}"})), x
    )
    assert images.sample.shape == x.shape
    assert not images.sample.flags.writeable


@pytest.mark.parametrize("value", [{"image_data": "!!"}, {"image_data": "aGk="}, {"data": [[1]]}])
def test_what_is_no_image_is_422(images: ImageCodec, value: object) -> None:
    with pytest.raises(ValidationFailed):
        images.decode(body(value))


def test_v1_and_v2_image_forms(images: ImageCodec) -> None:
    text = base64.b64encode(sample_bytes("flower.jpg")).decode()
    batch = images.decode_instances([{"b64": text}, text, {"image_bytes": {"b64": text}}])
    assert batch.shape == (3, 3, 224, 224)
    with pytest.raises(ValidationFailed, match="b64"):
        images.decode_instances([1])
    one = images.decode_bytes([text])
    assert one is not None
    assert np.array_equal(one, batch[:1])
    assert images.decode_bytes([text, text]) is None  # one encoded image per tensor


def test_an_image_answers_its_top_label_and_the_top_k(images: ImageCodec) -> None:
    labels = ("a", "b", "c", "d")
    answer = images.answer(np.asarray([[0.1, 0.5, 0.15, 0.25]], np.float32), labels, 3)
    assert answer.label == answer.fields["prediction"] == "b"
    assert answer.fields["proba"] == pytest.approx(0.5)
    assert [entry["label"] for entry in answer.fields["top_k"]] == ["b", "d", "c"]
    assert images.describe()["data_type"] == "str"


def test_an_image_card_needs_preprocessing_and_a_sample() -> None:
    with pytest.raises(ModelLoadError, match="needs preprocessing and sample"):
        ImageCodec.of(load_card(CARDS, "iris-svc"), MODEL_DIR)


def test_labels_name_outputs_the_card_has_names_for() -> None:
    probabilities = np.asarray([0.2, 0.4, 0.4], np.float32)
    label, proba = top_label(probabilities, LABELS)
    assert (label, proba) == ("versicolor", float(np.float32(0.4)))  # the first of equals
    assert [label for label, _ in ranked(np.asarray([0.2, 0.5, 0.3]), LABELS, 2)] == [
        "versicolor",
        "virginica",
    ]
    assert (label_name(LABELS, 2), label_name(LABELS, 3)) == ("virginica", "3")
