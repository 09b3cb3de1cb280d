"""emulators.container without an engine: what it reads of the Dockerfile, the flags it
takes from the settings, and the one-line reason it gives where no engine answers."""

from __future__ import annotations

import pytest

from emulators.container import (
    DOCKERFILE,
    ContainerSettings,
    Engine,
    EngineError,
    base_image,
    find_engine,
)


def test_the_base_image_is_the_first_stage_s() -> None:
    first = next(ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("FROM "))
    assert base_image() == first.split()[1] == "python:3.11-slim-bookworm"


@pytest.mark.parametrize(
    ("flags", "shared"),
    [
        (("--network", "host"), True),
        (("--network=host",), True),
        (("--net", "host"), True),
        (("--network", "bridge"), False),
        (("--network", "hostile"), False),
        ((), False),
    ],
)
def test_host_network_is_read_from_the_run_flags(flags: tuple[str, ...], shared: bool) -> None:
    assert Engine("podman", (), flags).host_network is shared


def test_an_engine_that_is_not_installed_is_one_line_naming_it() -> None:
    settings = ContainerSettings(container_engine="no-such-engine-here")
    with pytest.raises(EngineError) as raised:
        find_engine(settings)
    assert str(raised.value) == "no container engine: install no-such-engine-here"


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINER_ENGINE", "docker")
    monkeypatch.setenv("IMAGE_TAG", "mine:1")
    monkeypatch.setenv("IMAGE_RUN_FLAGS", "--network host --ulimit nofile=1024:4096")
    settings = ContainerSettings()
    assert (settings.container_engine, settings.image_tag) == ("docker", "mine:1")
    assert settings.image_run_flags == "--network host --ulimit nofile=1024:4096"
