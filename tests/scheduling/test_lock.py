"""The ledger-level scan lock: a live scan of a collection keeps others out; a killed scan's lock (dead pid on
this host, or a silent heartbeat) is recovered; concurrent acquirers get exactly one winner."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import load_jsonl
from sqlalchemy import select
from support import build_qdrant_store, run_scan

from auditor.ledger import Ledger
from auditor.ledger.models import CollectionRow, ScanLockRow, ScanRow, utcnow
from auditor.scanlock import ScanLock, ScanLockedError


@pytest.fixture
def ledger(sqlite_ledger_url: str):  # type: ignore[no-untyped-def]
    led = Ledger(sqlite_ledger_url).open()
    with led.session() as s:
        s.add(CollectionRow(key="qdrant+local:///x#docs", source="qdrant+local:///x", name="docs"))
    yield led
    led.dispose()


def _plant_lock(ledger: Ledger, *, pid: int, hostname: str, silent_for: timedelta = timedelta(0)) -> None:
    with ledger.session() as s:
        beat = utcnow() - silent_for
        s.add(ScanLockRow(collection_id=1, scan_id=41, holder=f"{hostname}:{pid}:planted", pid=pid,
                          hostname=hostname, acquired_at=beat, heartbeat_at=beat))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid no longer exists
    return proc.pid


def test_live_lock_keeps_a_second_scan_out_and_release_frees_it(ledger: Ledger) -> None:
    first = ScanLock(ledger, 1).acquire()
    with pytest.raises(ScanLockedError) as err:
        ScanLock(ledger, 1).acquire()
    assert err.value.exit_code == 3 and "already running" in str(err.value)
    first.release()
    second = ScanLock(ledger, 1).acquire()
    assert second.recovered_from is None
    second.release()
    with ledger.session() as s:
        assert s.scalar(select(ScanLockRow)) is None


def test_lock_of_a_dead_process_on_this_host_is_recovered(ledger: Ledger) -> None:
    pid = _dead_pid()
    _plant_lock(ledger, pid=pid, hostname=socket.gethostname())
    lock = ScanLock(ledger, 1).acquire()
    assert lock.recovered_from is not None
    assert f"process {pid} on host {socket.gethostname()} is gone" in lock.recovered_from
    lock.release()


def test_other_hosts_lock_is_recovered_only_after_its_heartbeat_goes_silent(ledger: Ledger) -> None:
    _plant_lock(ledger, pid=1, hostname="other-host", silent_for=timedelta(seconds=60))
    with pytest.raises(ScanLockedError):
        ScanLock(ledger, 1, stale_after=900).acquire()
    with ledger.session() as s:
        row = s.get(ScanLockRow, 1)
        assert row is not None
        row.heartbeat_at = utcnow() - timedelta(hours=2)
    lock = ScanLock(ledger, 1, stale_after=900).acquire()
    assert lock.recovered_from is not None and "no heartbeat" in lock.recovered_from
    lock.release()


def test_heartbeat_thread_refreshes_the_lock(ledger: Ledger) -> None:
    lock = ScanLock(ledger, 1, heartbeat_every=0.05).acquire()
    with ledger.session() as s:
        row = s.get(ScanLockRow, 1)
        assert row is not None
        row.heartbeat_at = utcnow() - timedelta(hours=1)
    deadline = utcnow() + timedelta(seconds=10)
    while utcnow() < deadline:
        with ledger.session() as s:
            row = s.get(ScanLockRow, 1)
            assert row is not None
            if (utcnow() - row.heartbeat_at).total_seconds() < 5:
                break
    else:
        pytest.fail("heartbeat never refreshed the lock")
    lock.release()


def test_concurrent_acquirers_get_exactly_one_winner(ledger: Ledger) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def attempt() -> None:
        barrier.wait()
        try:
            ScanLock(ledger, 1).acquire()
            outcomes.append("won")
        except ScanLockedError:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 5 + ["won"]


def test_scan_refused_while_locked_and_runs_after_a_killed_scan(tmp_path: Path, sqlite_ledger_url: str, embed) -> None:  # type: ignore[no-untyped-def]
    rows = load_jsonl("wikipedia_en.jsonl")[:30]
    uri = build_qdrant_store(tmp_path / "store", embed([r["text"] for r in rows]), [{"text": r["text"]} for r in rows])
    run_scan(uri, sqlite_ledger_url, detectors=["integrity"])  # creates the collection row
    ledger = Ledger(sqlite_ledger_url).open()
    _plant_lock(ledger, pid=1, hostname="scheduler-7", silent_for=timedelta(seconds=5))
    with pytest.raises(ScanLockedError):
        run_scan(uri, sqlite_ledger_url, detectors=["integrity"])
    with ledger.session() as s:
        assert len(s.scalars(select(ScanRow)).all()) == 1  # the refused run left no scan behind
        row = s.get(ScanLockRow, 1)
        assert row is not None
        row.hostname, row.pid = socket.gethostname(), _dead_pid()  # the holder was killed
    result = run_scan(uri, sqlite_ledger_url, detectors=["integrity"])
    assert result.status == "completed"
    assert any("recovered a stale scan lock" in n for n in result.notes)
    with ledger.session() as s:
        assert s.scalar(select(ScanLockRow)) is None
    ledger.dispose()


def test_cli_exits_3_when_the_collection_is_being_scanned(tmp_path: Path, sqlite_ledger_url: str, embed) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from auditor.cli.main import cli

    rows = load_jsonl("wikipedia_en.jsonl")[:10]
    uri = build_qdrant_store(tmp_path / "store", embed([r["text"] for r in rows]), [{"text": r["text"]} for r in rows])
    run_scan(uri, sqlite_ledger_url, detectors=["integrity"])
    ledger = Ledger(sqlite_ledger_url).open()
    _plant_lock(ledger, pid=1, hostname="scheduler-7")
    ledger.dispose()
    res = CliRunner().invoke(
        cli, ["-q", "scan", uri, "-c", "docs", "--ledger", sqlite_ledger_url, "-d", "integrity", "--text-field", "text"]
    )
    assert res.exit_code == 3, res.output
    assert "already running" in res.output
