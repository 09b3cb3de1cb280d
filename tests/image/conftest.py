"""The image tier: the one image (knative/Dockerfile) built and run as Knative runs each Service.

    make test-image     # python -m emulators.container prepare, then pytest -m image tests/image

Opt-in: a plain ``pytest`` (``make test``) skips it, with that reason. Selected with
``-m image``, it builds the image with whichever engine answers (``emulators.container``:
Podman or Docker, the flags this host needs); where no engine answers or the base image is
missing, every test skips with a one-line reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emulators.container import ContainerSettings, Engine, EngineError, find_engine

HERE = Path(__file__).parent


def _opted_in(config: pytest.Config) -> bool:
    expression = str(config.getoption("markexpr") or "")
    return "image" in expression and "not image" not in expression


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test in this folder is in the ``image`` tier, and skipped unless it was asked for."""
    skip = pytest.mark.skip(reason="the image tier is opt-in: make test-image")
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.image)
            if not _opted_in(config):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def engine() -> Engine:
    try:
        return find_engine()
    except EngineError as e:
        pytest.skip(str(e).splitlines()[0])


@pytest.fixture(scope="session")
def image(engine: Engine) -> str:
    """The image, built once per run from this checkout (a cached build takes seconds)."""
    tag = ContainerSettings().image_tag
    engine.build(tag)
    return tag
