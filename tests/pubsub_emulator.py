"""The gcloud Pub/Sub emulator on a free loopback port (its java child stopped with it)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from emulators.processes import stop_group
from tests.helpers import free_port, wait_for


def emulator_missing() -> str | None:
    """Why the emulator cannot run here, or None."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return "gcloud is not installed (Google Cloud CLI)"
    sdk = Path(gcloud).resolve().parents[1]
    if not (sdk / "platform" / "pubsub-emulator").is_dir():
        return "the Pub/Sub emulator is not installed (gcloud components install pubsub-emulator)"
    if shutil.which("java") is None:
        return "the Pub/Sub emulator needs java"
    return None


@contextmanager
def pubsub_emulator() -> Iterator[str]:
    """``host:port`` for ``PUBSUB_EMULATOR_HOST``, while the emulator runs."""
    if reason := emulator_missing():
        pytest.skip(reason)
    port = free_port()
    process = subprocess.Popen(
        ["gcloud", "beta", "emulators", "pubsub", "start", f"--host-port=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: gcloud's python and the java server
    )
    try:
        wait_for(lambda: _listening(port), 60, "the Pub/Sub emulator to listen")
        yield f"127.0.0.1:{port}"
    finally:
        stop_group(process, 15)  # the java child too, should it outlive gcloud's python


def _listening(port: int) -> bool | None:
    with socket.socket() as s:
        s.settimeout(0.5)
        return True if s.connect_ex(("127.0.0.1", port)) == 0 else None
