"""Every ```console block in docs/ runs against the local platform, so the docs cannot rot.

A block is a sequence of ``$ command`` lines (``\\`` continues a line) each followed by its
expected output, where ``...`` stands for anything, as doctest's ELLIPSIS. Commands run
with bash from the repository root, with ``localhost:8080`` pointed at the test's gateway
and ``$API_TOKEN`` set to its API token (what ``make dev`` prints).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from emulators.manifests import REPO_ROOT
from tests.e2e.conftest import API_TOKEN

pytestmark = pytest.mark.e2e
DOCS = REPO_ROOT / "docs"
_BLOCK = re.compile(r"```console\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Step:
    page: str
    line: int
    command: str
    expected: str


def steps(page: Path) -> list[Step]:
    found: list[Step] = []
    text = page.read_text()
    for block in _BLOCK.finditer(text):
        first_line = text[: block.start()].count("\n") + 2
        current: tuple[int, list[str], list[str]] | None = None  # (line, command, expected)
        continuing = False
        for offset, line in enumerate(block.group(1).splitlines()):
            if line.startswith("$ ") and not continuing:
                if current:
                    found.append(
                        Step(page.name, current[0], "\n".join(current[1]), "\n".join(current[2]))
                    )
                current = (first_line + offset, [line[2:]], [])
            elif current and continuing:
                current[1].append(line)
            elif current:
                current[2].append(line)
            continuing = line.endswith("\\")
        if current:
            found.append(Step(page.name, current[0], "\n".join(current[1]), "\n".join(current[2])))
    return found


def matches(expected: str, actual: str) -> bool:
    pattern = ".*?".join(re.escape(part) for part in expected.strip().split("..."))
    return re.fullmatch(pattern, actual.strip(), re.DOTALL) is not None


ALL = [step for page in sorted(DOCS.glob("*.md")) for step in steps(page)]


def test_the_docs_have_sessions() -> None:
    assert len(ALL) >= 10


@pytest.mark.parametrize("step", ALL, ids=[f"{s.page}:{s.line}" for s in ALL])
def test_doc_step(platform: str, step: Step) -> None:
    command = step.command.replace("localhost:8080", platform.removeprefix("http://"))
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "API_TOKEN": API_TOKEN},
    )
    assert done.returncode == 0, done.stderr
    assert matches(step.expected, done.stdout), f"{step.page}:{step.line}\n{done.stdout}"
