"""Imports point one way: the webhook module sits below the scan engine (the engine calls it; it reads the scan's
outcome through a protocol), so neither needs the other half-initialised."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import auditor.notify


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports anywhere (module level, functions, ``TYPE_CHECKING`` blocks)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_notify_imports_nothing_of_the_engine() -> None:
    imported = _imported_modules(Path(auditor.notify.__file__))
    assert not {m for m in imported if m == "auditor.engine" or m.startswith("auditor.engine.")}


def test_each_side_imports_alone() -> None:
    for module in ("auditor.notify", "auditor.engine"):
        run = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
