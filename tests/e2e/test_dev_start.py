"""What ``make dev`` says as it starts: a port already in use is one line that names the port
and the way out, at once, before any Service is started (no traceback); once up, the API
token on a line of its own."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from emulators.manifests import REPO_ROOT
from tests.helpers import free_port, run_module

pytestmark = pytest.mark.e2e


def test_a_port_in_use_is_one_line_naming_it_and_the_way_out() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        result = run_module("emulators.dev", "--port", str(port), timeout=60)
    assert result.returncode == 2
    assert time.monotonic() - started < 10  # nothing was started: no wait on any Service
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert f"port {port} on 127.0.0.1 is in use" in line
    assert f"make dev PORT={port + 1}" in line


@pytest.mark.parametrize("given", [None, "a-token-the-user-chose-0123"])
def test_make_dev_prints_the_api_token_and_hands_it_to_the_query_service(
    tmp_path: Path, given: str | None
) -> None:
    """The token is the caller's API_TOKEN, else one made for this run; the banner has it on a
    line of its own, and the prediction log's queries take it (and nothing else)."""
    knative = tmp_path / "knative"
    (knative / "services").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "knative" / "services" / "prediction-log.yaml", knative / "services")
    resources = {"namespace": "t", "resources": ["services/prediction-log.yaml"]}
    (knative / "kustomization.yaml").write_text(yaml.safe_dump(resources))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "API_TOKEN"}
    env |= {"LOG_STORE_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}"}
    env |= {"API_TOKEN": given} if given else {}
    command = [sys.executable, "-m", "emulators.dev", f"--port={port}"]
    command += [f"--knative={knative}", f"--eventing={tmp_path / 'none'}"]
    with subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            banner = []  # up to its last line (the dev server prints the banner once ready)
            while not (line := process.stdout.readline()).startswith("Ctrl-C stops") and line:
                banner.append(line.rstrip("\n"))
            [token] = [t.removeprefix("API token: ") for t in banner if t.startswith("API token: ")]
            assert token == given if given else len(token) >= 32
            logs = f"http://127.0.0.1:{port}/prediction-log/logs"
            assert httpx.get(logs).status_code == 401
            wrong = {"Authorization": f"Bearer {token}x"}
            assert httpx.get(logs, headers=wrong).status_code == 401
            answer = httpx.get(logs, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200
            assert answer.json()["records"] == []
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=60)  # drains the rest of the banner and the log
        assert process.returncode == 0
