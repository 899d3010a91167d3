"""A scan's process skips the interpreter's final garbage collection (``gc.freeze`` at exit) and still ends with
its whole JSON document, its exit code and its ledger."""

from __future__ import annotations

import gc
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import auditor.cli.scan as scan_cli


def test_the_freeze_is_registered_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[Any] = []
    monkeypatch.setattr(scan_cli.atexit, "register", registered.append)
    scan_cli.skip_final_collection.cache_clear()
    scan_cli.skip_final_collection()
    scan_cli.skip_final_collection()
    assert registered == [gc.freeze]
    scan_cli.skip_final_collection.cache_clear()


def test_a_scan_process_ends_with_its_document_exit_code_and_ledger(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    vectors[7] = 0.0  # a zero vector: an integrity finding (VA1xx), so the exit code says "findings"
    export = tmp_path / "dump.jsonl"
    export.write_text("".join(json.dumps({"id": i, "vector": v.tolist(), "tenant": f"t{i % 3}"}) + "\n"
                              for i, v in enumerate(vectors)))
    ledger = tmp_path / "ledger.db"
    proc = subprocess.run(
        [sys.executable, "-c", "from auditor.cli.main import main; main()", "-q", "scan", f"file://{export}",
         "-c", "dump", "--tenant-field", "tenant", "-d", "integrity", "--format", "json", "--fail-on", "low",
         "--ledger", f"sqlite:///{ledger}"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300, check=False,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["scan"]["status"] == "completed" and doc["scan"]["points_scanned"] == 300
    assert 7 in {f["point_id"] for f in doc["findings"]}
    with sqlite3.connect(ledger) as db:
        assert db.execute("SELECT COUNT(*) FROM point_versions").fetchone()[0] == 300
        assert db.execute("SELECT COUNT(*) FROM findings").fetchone()[0] == len(doc["findings"])
