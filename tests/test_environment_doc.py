"""docs/environment.md lists every environment variable the package reads.

The package's string constants that look like environment variable names
(``UPPER_CASE_WITH_UNDERSCORES``, plus the launcher's bare ``RANK``/
``WORLD_SIZE``/``HOSTFILE``) must each appear in the doc as ```NAME```.
Upper-case strings that name Python objects (``__all__`` entries, module
constants, ``os`` attributes) are not variables and are left out.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ezpz"
DOC = ROOT / "docs" / "environment.md"
NAME = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$|^(RANK|WORLD_SIZE|HOSTFILE)$")


def _module_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        for target in targets:
            if isinstance(target, ast.Name):
                names.add(target.id)
    return names


def variables_read() -> dict[str, list[str]]:
    """Variable name -> the package files that mention it."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in PACKAGE.rglob("*.py")}
    python_names = set().union(*(_module_level_names(t) for t in trees.values()))
    found: dict[str, list[str]] = {}
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            text = node.value
            if NAME.match(text) and text not in python_names and not hasattr(os, text):
                found.setdefault(text, []).append(str(path.relative_to(ROOT)))
    return found


def test_the_scan_finds_known_variables():
    found = variables_read()
    # read through ezpz._env, os.environ, a tuple of launcher names, a report allow-list
    for name in ("EZPZ_COLLECTIVE_TIMEOUT", "WANDB_DISABLED", "PMI_LOCAL_RANK", "WANDB_DIR"):
        assert name in found, name
    assert "COUNTER_KEYS" not in found and "O_CLOEXEC" not in found


def test_every_variable_is_in_environment_md():
    doc = DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]*)`", doc))
    missing = {name: files for name, files in variables_read().items() if name not in documented}
    assert missing == {}, f"add these to docs/environment.md: {missing}"
