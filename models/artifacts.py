"""Card bookkeeping shared by the model build scripts (stdlib only: it runs in any venv).

A card's ``file`` and ``sha256`` say what ``make models`` must produce; these helpers decide
whether an artifact can be reused, print progress, and verify or record checksums.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def arguments(doc: str, names: Iterable[str], argv: list[str] | None) -> argparse.Namespace:
    """The command line every build script takes: where to build, which cards, which models."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cards", type=Path, default=Path(__file__).parent)
    parser.add_argument("--only", nargs="*", choices=sorted(names))
    parser.add_argument("--update-cards", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def card(cards: Path, name: str) -> dict[str, object]:
    with (cards / name / "model.toml").open("rb") as f:
        return tomllib.load(f)


def needs_build(cards: Path, out: Path, name: str) -> Path | None:
    """The artifact path to (re)build, or None when it exists and matches its card."""
    path = out / str(card(cards, name)["file"])
    if path.is_file() and sha256_of(path) == card(cards, name)["sha256"]:
        return None
    return path


def report(cards: Path, out: Path, name: str, what: str) -> None:
    size = (out / str(card(cards, name)["file"])).stat().st_size
    print(f"  {name:<28} {size / 1e6:8.2f} MB  {what}", flush=True)


def finish(cards: Path, out: Path, names: list[str], *, update: bool) -> int:
    """Check every built artifact against its card (or write its sha256 into the card)."""
    failed = 0
    for name in names:
        path = cards / name / "model.toml"
        actual = sha256_of(out / str(card(cards, name)["file"]))
        if update:
            text = re.sub(r'(?m)^sha256 = ".*"$', f'sha256 = "{actual}"', path.read_text(), count=1)
            path.write_text(text)
        elif actual != card(cards, name)["sha256"]:
            print(
                f"  {name}: sha256 {actual} differs from {path}; the build is not "
                "reproducible here (different package versions?)",
                flush=True,
            )
            failed += 1
    return 1 if failed else 0
