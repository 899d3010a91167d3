"""Folders vecaudit owns (demo store, red-team copy): recreated on each run, never one a user made."""

from __future__ import annotations

import shutil
from pathlib import Path

from auditor.errors import ConfigError


def recreate_owned_dir(path: Path, *, marker: str, command: str, option: str) -> None:
    """Empty ``path`` for ``command``; refuse when it exists without our ``marker`` file (a user's folder)."""
    if path.exists():
        if not (path / marker).exists():
            raise ConfigError(
                f"{path} exists and was not made by `vecaudit {command}`; not touching it",
                hint=f"pass {option} a new folder",
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / marker).write_text(f"made by vecaudit {command}; safe to delete\n")
