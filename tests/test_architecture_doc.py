"""docs/architecture.md's module table matches the package tree (issue 9)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
SKIP = {"__init__.py", "_version.py"}


def _table() -> str:
    text = DOC.read_text()
    return text[text.index("## Modules") : text.index("## Interfaces")]


def _modules() -> list[Path]:
    return sorted(
        p.relative_to(ROOT)
        for p in (ROOT / "ezpz").rglob("*.py")
        if p.name not in SKIP and "__pycache__" not in p.parts
    )


def test_every_module_is_in_the_table():
    table = _table()
    named = set(re.findall(r"`(ezpz/[\w/]+(?:\.py|/))`", table))
    missing = []
    for rel in _modules():
        path = rel.as_posix()
        if path in named:
            continue
        package = f"{rel.parent.as_posix()}/"
        # a package row names its modules by stem: `csv_backend`, `watch`, ...
        if package in named and f"`{rel.stem}`" in table:
            continue
        missing.append(path)
    assert not missing, f"modules missing from docs/architecture.md: {missing}"


def test_every_path_in_the_table_exists():
    named = re.findall(r"`(ezpz/[\w/]+(?:\.py|/))`", _table())
    assert named
    gone = [p for p in named if not (ROOT / p).exists()]
    assert not gone, f"docs/architecture.md names paths that do not exist: {gone}"
