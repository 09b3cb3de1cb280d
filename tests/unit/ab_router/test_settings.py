"""The router's settings: VARIANTS and WEIGHTS that do not agree stop it before it serves."""

from __future__ import annotations

import pytest

from functions.ab_router.settings import AbRouterSettings


@pytest.mark.parametrize(
    ("variants", "weights", "message"),
    [
        ("svc=http://a,rf=http://b", "svc=60,rf=30", "sum to 100"),
        ("svc=http://a", "svc=60,rf=40", "VARIANTS names"),
        ("svc", "svc=100", "name=value"),
        ("svc=http://a,rf=http://b", "svc=60,rf=forty", "'forty' is not a whole percent"),
        ("svc=http://a,svc=http://b", "svc=100", "'svc' is named twice"),
    ],
)
def test_inconsistent_settings_stop_the_router(
    monkeypatch: pytest.MonkeyPatch, variants: str, weights: str, message: str
) -> None:
    monkeypatch.setenv("VARIANTS", variants)
    monkeypatch.setenv("WEIGHTS", weights)
    with pytest.raises(ValueError, match=message):
        AbRouterSettings()
