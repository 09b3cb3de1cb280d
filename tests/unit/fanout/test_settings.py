"""BACKENDS: name=URL pairs; names that would collide with the proxy's own keys are refused."""

from __future__ import annotations

import pytest

from functions.core.settings import SettingsError, build_settings
from functions.fanout.settings import FanoutSettings


def test_pairs_in_order_with_spaces_and_trailing_slashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKENDS", " b=http://b.ns.svc.cluster.local/ , a=https://a:8443,")
    settings = build_settings(FanoutSettings)
    assert list(settings.backends.items()) == [
        ("b", "http://b.ns.svc.cluster.local"),
        ("a", "https://a:8443"),
    ]


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a",
        "a=ftp://x",
        "errors=http://x",
        "job_id=http://x",
        "A=http://x",
        "a=http://x,a=http://y",
    ],
)
def test_bad_backends_stop_the_process_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("BACKENDS", value)
    with pytest.raises(SettingsError, match="BACKENDS"):
        build_settings(FanoutSettings)
