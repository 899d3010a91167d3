"""The ledger-level scan lock: one row per collection while a scan runs, so scheduled scans never overlap.

A lock whose holder is gone is taken over: same host and the process id no longer exists, or (any host) no
heartbeat for ``stale_after`` seconds. A background thread refreshes the heartbeat while the scan runs.
Every running scan holds its collection's lock (attached in the transaction that creates the scan row), so a
``running`` scan whose lock is gone or whose holder is dead was killed: it is marked ``abandoned`` with the
reason, by the scan that recovers the lock or by ``vecaudit scans list|show``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from auditor.errors import ExitCode, VecauditError
from auditor.ledger.models import ScanLockRow, ScanRow, utcnow
from auditor.ledger.session import Ledger

#: Seconds without a heartbeat after which a holder on another host counts as gone (``ScanOptions`` default).
DEFAULT_STALE_AFTER = 900.0

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


def holder_gone(row: ScanLockRow, *, stale_after: float, now: datetime | None = None) -> str | None:
    """Why the holder of lock ``row`` is gone, seen from this host, or None while it looks alive: its process
    no longer exists (same host only), or its heartbeat has been silent for more than ``stale_after`` seconds."""
    silent = ((now or utcnow()) - row.heartbeat_at).total_seconds()
    who = f"process {row.pid} on host {row.hostname}"
    if row.hostname == socket.gethostname() and row.pid is not None and not _process_alive(row.pid):
        return f"{who} is gone"
    if silent > stale_after:
        return f"{who} sent no heartbeat for {timedelta(seconds=int(silent))}"
    return None


def _abandon(session: Session, scan_id: int, reason: str, *, ended: datetime | None = None) -> None:
    """Mark scan ``scan_id`` abandoned with ``reason`` (only while it is running or already abandoned);
    ``ended``, when known, is its last sign of life."""
    values: dict[str, object] = {"status": "abandoned", "error": reason}
    if ended is not None:
        values["finished_at"] = ended
    session.execute(
        update(ScanRow).where(ScanRow.id == scan_id, ScanRow.status.in_(("running", "abandoned"))).values(**values)
    )


def mark_abandoned_scans(ledger: Ledger, *, stale_after: float = DEFAULT_STALE_AFTER) -> list[int]:
    """Mark every ``running`` scan whose process is gone as ``abandoned`` (with the reason); their ids.

    Its lock may still be in place (the next scan of the collection recovers it); the scan's end time is its
    last heartbeat.
    """
    done: list[int] = []
    try:
        with ledger.session() as s:
            for scan in s.scalars(select(ScanRow).where(ScanRow.status == "running")).all():
                row = s.get(ScanLockRow, scan.collection_id)
                if row is not None and row.scan_id == scan.id:
                    why = holder_gone(row, stale_after=stale_after)
                    if why is None:
                        continue
                    reason = f"{why}; the next scan of this collection recovers its lock"
                    _abandon(s, scan.id, reason, ended=row.heartbeat_at)
                else:
                    _abandon(s, scan.id, "its process ended without recording an outcome (it holds no scan lock)")
                done.append(scan.id)
    except (VecauditError, SQLAlchemyError) as e:  # e.g. a read-only ledger role: show the scans as recorded
        log.warning("could not mark abandoned scans: %s", str(e).splitlines()[0])
        return []
    return done


class ScanLock:
    """Holds the lock of one collection; use :meth:`acquire`, then :meth:`release` (also on failure)."""

    def __init__(
        self,
        ledger: Ledger,
        collection_id: int,
        *,
        stale_after: float = DEFAULT_STALE_AFTER,
        heartbeat_every: float = 30.0,
    ) -> None:
        self.ledger = ledger
        self.collection_id = collection_id
        self.stale_after = stale_after
        self.heartbeat_every = heartbeat_every
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.token = f"{self.hostname}:{self.pid}:{uuid.uuid4().hex[:12]}"
        self.recovered_from: str | None = None
        #: (scan id, why its holder is gone) of the scan whose lock this one recovered
        self._abandoned: tuple[int, str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> ScanLock:
        """Take the lock, recovering a stale one; raises :class:`ScanLockedError` when a live scan holds it."""
        for _ in range(3):
            if self._insert():
                self._start_heartbeat()
                return self
            holder, why = self._holder_state()
            if holder is not None and why is not None:
                self._take_over(holder, why)
        with self.ledger.session() as s:
            row = s.get(ScanLockRow, self.collection_id)
            who = "another scan" if row is None else f"{row.holder} (scan {row.scan_id}, since {row.acquired_at})"
        raise ScanLockedError(
            f"a scan of this collection is already running: {who}",
            hint="wait for it to finish; a killed scan's lock is recovered automatically "
            f"(dead process on the same host, or no heartbeat for {int(self.stale_after)} s)",
        )

    def attach_scan(self, session: Session, scan_id: int) -> None:
        """Record ``scan_id`` as the holder's scan, in the caller's transaction that creates the scan row (so a
        running scan is always attached to a lock); the scan whose lock was recovered names ``scan_id``."""
        session.execute(
            update(ScanLockRow)
            .where(ScanLockRow.collection_id == self.collection_id, ScanLockRow.holder == self.token)
            .values(scan_id=scan_id)
        )
        if self._abandoned is not None:
            old_scan, why = self._abandoned
            _abandon(session, old_scan, f"{why}; lock recovered by scan {scan_id}")

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

    def _holder_state(self) -> tuple[ScanLockRow | None, str | None]:
        """The lock row (None when released meanwhile) and why its holder is gone (None while it is alive)."""
        with self.ledger.session() as s:
            row = s.scalar(select(ScanLockRow).where(ScanLockRow.collection_id == self.collection_id))
        if row is None:
            return None, None
        why = holder_gone(row, stale_after=self.stale_after)
        if why is not None:
            log.warning("recovering the stale scan lock of %s (scan %s): %s", row.holder, row.scan_id, why)
            self.recovered_from = f"{row.holder} (scan {row.scan_id}): {why}"
        return row, why

    def _take_over(self, holder: ScanLockRow, why: str) -> None:
        """Delete a dead holder's lock and mark its scan abandoned, ending at its last heartbeat (conditional on
        that holder, so two recoverers cannot both win)."""
        with self.ledger.session() as s:
            gone = s.execute(
                delete(ScanLockRow).where(
                    ScanLockRow.collection_id == self.collection_id, ScanLockRow.holder == holder.holder
                )
            )
            if gone.rowcount and holder.scan_id is not None:  # type: ignore[attr-defined]
                self._abandoned = (holder.scan_id, why)
                reason = f"{why}; lock recovered by process {self.pid} on host {self.hostname}"
                _abandon(s, holder.scan_id, reason, ended=holder.heartbeat_at)

    def _start_heartbeat(self) -> None:
        def run() -> None:
            while not self._stop.wait(self.heartbeat_every):
                try:
                    self.beat()
                except Exception:  # a missed beat only makes the lock look older; the scan goes on
                    log.debug("scan lock heartbeat failed", exc_info=True)

        self._thread = threading.Thread(target=run, name="vecaudit-scan-lock", daemon=True)
        self._thread.start()

