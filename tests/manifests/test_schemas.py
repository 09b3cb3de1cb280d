"""The vendored schemas (emulators/schemas): byte for byte the upstream files its README
names, and enough on their own: a copy of the repository with nothing beside it validates
its manifests."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from emulators.manifests import REPO_ROOT
from emulators.validate import SCHEMAS, ValidateSettings
from tests.helpers import run_module

ROW = re.compile(r"^\| `(?P<file>[^`]+)` \|.*\| (?P<blob>[0-9a-f]{40}) \|$", re.MULTILINE)


def git_blob(path: Path) -> str:
    """What ``git hash-object`` prints for a file, without needing git."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def pinned() -> dict[str, str]:
    return {m["file"]: m["blob"] for m in ROW.finditer((SCHEMAS / "README.md").read_text())}


def test_every_vendored_file_is_the_pinned_upstream_blob() -> None:
    on_disk = {
        str(p.relative_to(SCHEMAS)): git_blob(p)
        for p in sorted(SCHEMAS.glob("*/*"))
        if p.suffix in (".yaml", ".json")
    }
    assert on_disk, f"no schemas under {SCHEMAS}"
    assert on_disk == pinned(), "a schema differs from its README row: see 'Refreshing them'"


def test_the_validator_reads_the_vendored_copy_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHEMA_DIR", raising=False)
    assert ValidateSettings().schema_dir == SCHEMAS
    assert SCHEMAS.is_relative_to(REPO_ROOT)
    assert (SCHEMAS / "LICENSE").read_text().lstrip().startswith("Apache License")


def repository_files() -> list[str]:
    """What a clone holds: the tracked files plus the untracked ones git does not ignore."""
    if not (REPO_ROOT / ".git").exists():  # an unpacked source tree is its own clone
        return [str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.rglob("*") if p.is_file()]
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (REPO_ROOT / name).is_file()]


def test_a_copy_with_nothing_beside_it_validates_its_manifests(tmp_path: Path) -> None:
    clone = tmp_path / "alone" / "ml-serving-functions"
    for name in repository_files():
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, clone / name)
    assert not (clone.parent / "shared").exists()
    env = {k: v for k, v in os.environ.items() if k not in ("SCHEMA_DIR", "SHARED_DIR")}
    env.pop("PYTHONPATH", None)
    # `-m` in the copy puts it first on sys.path: its own emulators, not ours
    result = run_module("emulators.validate", cwd=clone, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"schemas: {clone / 'emulators' / 'schemas'}" in result.stdout
    assert "skaffold.yaml valid" in result.stdout
