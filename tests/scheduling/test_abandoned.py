"""A scan killed mid-run (``kill -9``) is not left ``running`` forever: ``scans list|show`` or the next scan of the
collection marks it ``abandoned`` with the reason, on SQLite and PostgreSQL. The killed scan is a real ``vecaudit
scan`` process whose store stops answering after the first page."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import load_jsonl
from sqlalchemy import select
from support import build_qdrant_store, run_scan

from auditor.cli.main import cli
from auditor.ledger import Ledger
from auditor.ledger.models import CollectionRow, ScanLockRow, ScanRow, utcnow
from auditor.scanlock import mark_abandoned_scans

# The child is the real CLI; only the store is made to hang after its first page, so the kill lands mid-scan.
STALLED_SCAN = """
import sys, time
from pathlib import Path
from connectors.qdrant import QdrantConnector

original = QdrantConnector.iter_batches

def stalled(self, **kwargs):
    for page in original(self, **kwargs):
        yield page
        Path(sys.argv[1]).write_text("mid-scan")
        time.sleep(600)

QdrantConnector.iter_batches = stalled
from auditor.cli.main import cli
cli(sys.argv[2:], prog_name="vecaudit")
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, embed: Any) -> str:
    rows = load_jsonl("wikipedia_en.jsonl")[:40]
    return build_qdrant_store(tmp_path_factory.mktemp("abandoned") / "store", embed([r["text"] for r in rows]),
                              [{"text": r["text"]} for r in rows])


def _kill_mid_scan(store: str, ledger_url: str, tmp_path: Path) -> int:
    """Start `vecaudit scan` in a child process, SIGKILL it once it is mid-scan; its pid."""
    marker = tmp_path / "mid-scan"
    args = ["-q", "scan", store, "-c", "docs", "--text-field", "text", "--ledger", ledger_url, "-d", "integrity",
            "--batch-size", "10"]
    child = subprocess.Popen([sys.executable, "-c", STALLED_SCAN, str(marker), *args],
                             env={**os.environ, "HF_HUB_OFFLINE": "1"}, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else "child exited"
            assert time.monotonic() < deadline, "the child scan never reached its second page"
            time.sleep(0.1)
        # alive and mid-scan: reading the scan log must not call it abandoned
        listed = _scans(ledger_url)
        assert [(s["id"], s["status"]) for s in listed] == [(1, "running")]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        if child.stderr:
            child.stderr.close()
    return child.pid


def _scans(ledger_url: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["scans", "list", "--ledger", ledger_url, "--format", "json"])
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout)["scans"])


def test_killed_scan_is_marked_abandoned_by_scans_list_and_named_by_the_next_scan(
    store: str, sqlite_ledger_url: str, tmp_path: Path
) -> None:
    pid = _kill_mid_scan(store, sqlite_ledger_url, tmp_path)
    gone = f"process {pid} on host {socket.gethostname()} is gone"

    (killed,) = _scans(sqlite_ledger_url)
    assert killed["status"] == "abandoned"
    assert killed["error"].startswith(gone) and "the next scan of this collection recovers its lock" in killed["error"]
    assert killed["finished_at"] is not None  # its last heartbeat
    shown = CliRunner().invoke(cli, ["scans", "show", "1", "--ledger", sqlite_ledger_url])
    assert shown.exit_code == 0 and "abandoned" in shown.output and gone in shown.output

    result = run_scan(store, sqlite_ledger_url, detectors=["integrity"])
    assert result.status == "completed" and result.scan_id == 2
    assert any("recovered a stale scan lock" in n and gone in n for n in result.notes)
    statuses = {s["id"]: (s["status"], s["error"]) for s in _scans(sqlite_ledger_url)}
    assert statuses[1] == ("abandoned", f"{gone}; lock recovered by scan 2")
    assert statuses[2] == ("completed", None)


@pytest.mark.postgres
def test_next_scan_marks_a_killed_scan_abandoned_on_postgres(
    store: str, fresh_postgres_db: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade", "--ledger", fresh_postgres_db]).exit_code == 0
    pid = _kill_mid_scan(store, fresh_postgres_db, tmp_path)
    scan = ["-q", "scan", store, "-c", "docs", "--text-field", "text", "--ledger", fresh_postgres_db, "-d", "integrity",
            "--format", "json", "--exit-zero"]
    done = runner.invoke(cli, scan)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["scan"]["status"] == "completed"
    statuses = {s["id"]: (s["status"], s["error"]) for s in _scans(fresh_postgres_db)}
    gone = f"process {pid} on host {socket.gethostname()} is gone"
    assert statuses[1] == ("abandoned", f"{gone}; lock recovered by scan 2")


@pytest.fixture
def ledger(sqlite_ledger_url: str):  # type: ignore[no-untyped-def]
    led = Ledger(sqlite_ledger_url).open()
    with led.session() as s:
        for n in (1, 2, 3):
            s.add(CollectionRow(key=f"qdrant://h#c{n}", source="qdrant://h", name=f"c{n}"))
    yield led
    led.dispose()


def _running_scan(ledger: Ledger, collection_id: int, *, lock_host: str | None, silent_for: timedelta) -> int:
    """A running scan of ``collection_id``, holding a lock of a process on ``lock_host`` (None: no lock)."""
    with ledger.session() as s:
        scan = ScanRow(collection_id=collection_id, source="qdrant://h", collection_name="c", status="running",
                       tool_version="test")
        s.add(scan)
        s.flush()
        if lock_host is not None:
            beat = utcnow() - silent_for
            s.add(ScanLockRow(collection_id=collection_id, scan_id=scan.id, holder=f"{lock_host}:4242:x", pid=4242,
                              hostname=lock_host, acquired_at=beat, heartbeat_at=beat))
        return scan.id


def test_scans_on_other_hosts_are_abandoned_only_after_their_heartbeat_goes_silent(ledger: Ledger) -> None:
    live = _running_scan(ledger, 1, lock_host="scheduler-7", silent_for=timedelta(seconds=40))
    silent = _running_scan(ledger, 2, lock_host="scheduler-8", silent_for=timedelta(hours=2))
    unlocked = _running_scan(ledger, 3, lock_host=None, silent_for=timedelta(0))
    assert sorted(mark_abandoned_scans(ledger)) == [silent, unlocked]
    with ledger.session() as s:
        rows = {r.id: r for r in s.scalars(select(ScanRow))}
        assert rows[live].status == "running" and rows[live].error is None
        assert rows[silent].status == "abandoned"
        assert rows[silent].error.startswith("process 4242 on host scheduler-8 sent no heartbeat for 2:00:")
        assert rows[unlocked].status == "abandoned" and "holds no scan lock" in (rows[unlocked].error or "")
        assert s.get(ScanLockRow, 2) is not None  # the lock itself is left to the next scan, which recovers it
    assert mark_abandoned_scans(ledger) == []  # nothing more to do
