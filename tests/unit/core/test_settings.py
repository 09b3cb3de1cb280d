"""Settings: a bad value stops the process with a message that names the variable; each
function has the settings of its own concerns, name=value lists read as one type."""

from __future__ import annotations

import pytest

from functions.ab_router.settings import AbRouterSettings
from functions.async_worker.settings import AsyncWorkerSettings
from functions.core.settings import (
    ApiTokenSettings,
    BaseFunctionSettings,
    EventSettings,
    JobStoreSettings,
    ModelSettings,
    NameValues,
    SettingsError,
    build_settings,
)
from functions.fanout.settings import FanoutSettings
from functions.predict.settings import PredictSettings
from functions.prediction_log.settings import PredictionLogSettings
from functions.sync_async.settings import SyncAsyncSettings


def test_bad_values_name_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_NAME", "iris-svc")
    monkeypatch.setenv("MODEL_THREADS", "zero")
    monkeypatch.setenv("MAX_BODY_BYTES", "-1")
    with pytest.raises(
        SettingsError, match="MODEL_THREADS.*MAX_BODY_BYTES|MAX_BODY_BYTES.*MODEL_THREADS"
    ):
        build_settings(PredictSettings)


def test_missing_model_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODEL_NAME", raising=False)
    with pytest.raises(SettingsError, match="MODEL_NAME"):
        build_settings(PredictSettings)


def test_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_NAME", "iris-rf")
    monkeypatch.setenv("MODEL_THREADS", "2")
    settings = build_settings(PredictSettings)
    assert (settings.model_name, settings.model_threads) == ("iris-rf", 2)


class Pairs(BaseFunctionSettings):
    pairs: NameValues


def test_name_values_keep_their_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAIRS", " b = http://b/?x=1 , a=2,")
    assert list(build_settings(Pairs).pairs.items()) == [("b", "http://b/?x=1"), ("a", "2")]


@pytest.mark.parametrize(
    ("value", "message"),
    [("a", "expected name=value, got 'a'"), ("=1", "name=value"), ("a=1,a=2", "named twice")],
)
def test_bad_name_values_name_their_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("PAIRS", value)
    with pytest.raises(SettingsError, match=f"PAIRS .*{message}"):
        build_settings(Pairs)


PUBLISHERS = [
    PredictSettings,
    FanoutSettings,
    PredictionLogSettings,
    SyncAsyncSettings,
    AsyncWorkerSettings,
]


@pytest.mark.parametrize("settings", PUBLISHERS, ids=lambda s: s.__name__)
def test_every_publisher_checks_its_transport(
    monkeypatch: pytest.MonkeyPatch, settings: type[EventSettings]
) -> None:
    monkeypatch.setenv("MODEL_NAME", "iris-svc")
    monkeypatch.setenv("BACKENDS", "a=http://a")
    monkeypatch.setenv("EVENT_TRANSPORT", "pubsub")
    monkeypatch.delenv("PUBSUB_PROJECT", raising=False)
    with pytest.raises(SettingsError, match="needs PUBSUB_PROJECT and PUBSUB_TOPIC"):
        build_settings(settings)


def test_a_function_has_fields_for_its_own_concerns_only() -> None:
    def has(settings: type[BaseFunctionSettings], concern: type[BaseFunctionSettings]) -> bool:
        own = concern.model_fields.keys() - BaseFunctionSettings.model_fields.keys()
        return own <= settings.model_fields.keys()

    concerns = (ModelSettings, EventSettings, JobStoreSettings)
    assert [c for c in concerns if has(AbRouterSettings, c)] == []
    assert [c for c in concerns if has(FanoutSettings, c)] == [EventSettings]
    assert [c for c in concerns if has(PredictionLogSettings, c)] == [EventSettings]
    assert [c for c in concerns if has(PredictSettings, c)] == [ModelSettings, EventSettings]
    assert [c for c in concerns if has(SyncAsyncSettings, c)] == list(concerns)
    assert [c for c in concerns if has(AsyncWorkerSettings, c)] == list(concerns)


def test_the_api_token_is_secret_and_blank_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    assert build_settings(ApiTokenSettings).api_token is None
    monkeypatch.setenv("API_TOKEN", "  ")  # a Secret key left empty: no token, not ""
    assert build_settings(ApiTokenSettings).api_token is None
    monkeypatch.setenv("API_TOKEN", "a-long-enough-token-0123")
    token = build_settings(ApiTokenSettings).api_token
    assert token is not None
    assert token.get_secret_value() == "a-long-enough-token-0123"
    assert "a-long-enough" not in repr(build_settings(ApiTokenSettings))
    monkeypatch.setenv("API_TOKEN", "short-token")
    with pytest.raises(SettingsError, match="API_TOKEN") as refused:
        build_settings(ApiTokenSettings)
    assert "short-token" not in str(refused.value)
