"""The ledger-level scan lock: one row per collection while a scan runs, so scheduled scans never overlap.

A lock whose holder is gone is taken over: same host and the process id no longer exists, or (any host) no
heartbeat for ``stale_after`` seconds. A background thread refreshes the heartbeat while the scan runs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from auditor.errors import ExitCode, VecauditError
from auditor.ledger.models import ScanLockRow, utcnow
from auditor.ledger.session import Ledger

log = logging.getLogger(__name__)


class ScanLockedError(VecauditError):
    """Another live scan of the same collection holds the lock (exit 3: this run did not scan)."""

    exit_code = ExitCode.INCOMPLETE


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class ScanLock:
    """Holds the lock of one collection; use :meth:`acquire`, then :meth:`release` (also on failure)."""

    def __init__(
        self, ledger: Ledger, collection_id: int, *, stale_after: float = 900.0, heartbeat_every: float = 30.0
    ) -> None:
        self.ledger = ledger
        self.collection_id = collection_id
        self.stale_after = stale_after
        self.heartbeat_every = heartbeat_every
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.token = f"{self.hostname}:{self.pid}:{uuid.uuid4().hex[:12]}"
        self.recovered_from: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> ScanLock:
        """Take the lock, recovering a stale one; raises :class:`ScanLockedError` when a live scan holds it."""
        for _ in range(3):
            if self._insert():
                self._start_heartbeat()
                return self
            live, holder = self._holder_state()
            if holder is not None and not live:
                self._take_over(holder)
        with self.ledger.session() as s:
            row = s.get(ScanLockRow, self.collection_id)
            who = "another scan" if row is None else f"{row.holder} (scan {row.scan_id}, since {row.acquired_at})"
        raise ScanLockedError(
            f"a scan of this collection is already running: {who}",
            hint="wait for it to finish; a killed scan's lock is recovered automatically "
            f"(dead process on the same host, or no heartbeat for {int(self.stale_after)} s)",
        )

    def attach_scan(self, scan_id: int) -> None:
        with self.ledger.session() as s:
            s.execute(
                update(ScanLockRow)
                .where(ScanLockRow.collection_id == self.collection_id, ScanLockRow.holder == self.token)
                .values(scan_id=scan_id)
            )

    def beat(self) -> None:
        with self.ledger.session() as s:
            s.execute(
                update(ScanLockRow)
                .where(ScanLockRow.collection_id == self.collection_id, ScanLockRow.holder == self.token)
                .values(heartbeat_at=utcnow())
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self.ledger.session() as s:
            s.execute(
                delete(ScanLockRow).where(
                    ScanLockRow.collection_id == self.collection_id, ScanLockRow.holder == self.token
                )
            )

    # -- internals ----------------------------------------------------------------------------------------
    def _insert(self) -> bool:
        now = utcnow()
        try:
            with self.ledger.session() as s:
                s.add(
                    ScanLockRow(
                        collection_id=self.collection_id,
                        holder=self.token,
                        pid=self.pid,
                        hostname=self.hostname,
                        acquired_at=now,
                        heartbeat_at=now,
                    )
                )
            return True
        except IntegrityError:
            return False

    def _holder_state(self) -> tuple[bool, str | None]:
        """(is the holder alive, its token); token None when the lock was released meanwhile."""
        with self.ledger.session() as s:
            row = s.scalar(select(ScanLockRow).where(ScanLockRow.collection_id == self.collection_id))
            if row is None:
                return False, None
            silent = (utcnow() - row.heartbeat_at).total_seconds()
            dead = row.hostname == self.hostname and row.pid is not None and not _process_alive(row.pid)
            if dead or silent > self.stale_after:
                why = "its process is gone" if dead else f"no heartbeat for {timedelta(seconds=int(silent))}"
                log.warning("recovering the stale scan lock of %s (scan %s): %s", row.holder, row.scan_id, why)
                self.recovered_from = f"{row.holder} (scan {row.scan_id}): {why}"
                return False, row.holder
            return True, row.holder

    def _take_over(self, holder: str) -> None:
        # conditional on the old holder, so two recoverers cannot both win
        with self.ledger.session() as s:
            s.execute(
                delete(ScanLockRow).where(ScanLockRow.collection_id == self.collection_id, ScanLockRow.holder == holder)
            )

    def _start_heartbeat(self) -> None:
        def run() -> None:
            while not self._stop.wait(self.heartbeat_every):
                try:
                    self.beat()
                except Exception:  # a missed beat only makes the lock look older; the scan goes on
                    log.debug("scan lock heartbeat failed", exc_info=True)

        self._thread = threading.Thread(target=run, name="vecaudit-scan-lock", daemon=True)
        self._thread.start()

