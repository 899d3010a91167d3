"""Quarantine and release: take suspect points out of retrieval (payload flag or move to a side collection)
without ever losing one. Backup first, every step idempotent, interrupted actions finished by ``recover``."""

from __future__ import annotations

import base64
import getpass
import logging
import os
import random
import signal
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from auditor.connector import Connector
from auditor.errors import ConfigError, ConnectorError, LedgerError, QuarantineError, VecauditError
from auditor.findings import parse_point_id, point_key
from auditor.guard import DEFAULT_FLAG_FIELD
from auditor.hashing import payload_hash, point_version, text_hash, vector_hash
from auditor.ledger.models import (
    CollectionRow,
    FindingRow,
    PointVersionRow,
    QuarantineActionRow,
    ScanRow,
    utcnow,
)
from auditor.ledger.session import Ledger
from auditor.types import MISSING, PointId, Severity, StoredPoint, resolve_field

log = logging.getLogger(__name__)

QUARANTINE_SUFFIX = "__quarantine"
#: Actions that own their point: a second action on the same point waits for these to finish.
ACTIVE_STATES = ("planned", "backed_up", "applied", "releasing")
#: Actions interrupted mid-way (a crash, a kill): ``recover`` finishes them.
UNFINISHED_STATES = ("planned", "backed_up", "releasing")
#: A lock whose holder cannot be checked (another host) is considered abandoned after this many seconds.
LOCK_LEASE_S = float(os.environ.get("VECAUDIT_QUARANTINE_LEASE_S", "900"))

#: Test hook: ``VECAUDIT_FAULT_AFTER=<step>`` SIGKILLs the process right after that step is durable, so the
#: fault-injection tests can prove that ``recover`` finishes the job. Steps: apply:claim, apply:backup,
#: apply:tag, apply:copy, apply:delete, apply:mark, release:claim, release:restore, release:delete_copy,
#: release:mark. Never set it outside tests.
FAULT_ENV = "VECAUDIT_FAULT_AFTER"

ConnectorFactory = Callable[[CollectionRow], Connector]


def _fault_point(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


# -- backups ------------------------------------------------------------------------------------------------
def encode_point(point: StoredPoint) -> dict[str, Any]:
    """A point as a JSON document: vectors as base64 of their float32 little-endian bytes (bit-exact, NaN-safe)."""
    vectors = {}
    for name, values in point.vectors.items():
        data = np.ascontiguousarray(values, dtype="<f4")
        vectors[name] = {"f32le": base64.b64encode(data.tobytes()).decode("ascii"), "hash": vector_hash(data)}
    return {
        "format": 1,
        "id": point.id,
        "vectors": vectors,
        "payload": point.payload,
        "payload_hash": payload_hash(point.payload),
    }


def decode_point(doc: dict[str, Any]) -> StoredPoint:
    """The exact point a backup holds (vectors as Python floats of the float32 values)."""
    vectors = {
        name: np.frombuffer(base64.b64decode(v["f32le"]), dtype="<f4").astype(np.float32).tolist()
        for name, v in doc["vectors"].items()
    }
    return StoredPoint(id=doc["id"], vectors=vectors, payload=dict(doc["payload"]))


def vectors_equal(a: StoredPoint, b: StoredPoint) -> bool:
    """Every named vector present in both with identical float32 bits."""
    if set(a.vectors) != set(b.vectors):
        return False
    for name, values in a.vectors.items():
        x = np.ascontiguousarray(values, dtype="<f4").tobytes()
        y = np.ascontiguousarray(b.vectors[name], dtype="<f4").tobytes()
        if x != y:
            return False
    return True


def without_flag(payload: dict[str, Any], flag_field: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != flag_field}


# -- locks --------------------------------------------------------------------------------------------------
def new_lock_token() -> str:
    """``nonce:pid:epoch:host`` so another run can tell a dead holder from a live one."""
    host = socket.gethostname()[:30]
    return f"{uuid.uuid4().hex[:12]}:{os.getpid()}:{int(time.time())}:{host}"


def lock_is_stale(token: str | None) -> bool:
    """True when nobody holds the lock: no token, a holder process that died on this host, or an old lease."""
    if not token:
        return True
    try:
        _, pid_text, epoch_text, host = token.split(":", 3)
        pid, epoch = int(pid_text), int(epoch_text)
    except ValueError:
        return True
    if host == socket.gethostname()[:30]:
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return time.time() - epoch > LOCK_LEASE_S


def _take_lock(session: Session, action_id: int, expected_state: str, token: str) -> bool:
    """Compare-and-swap the action's lock: succeeds only when it is in ``expected_state`` and free or stale.

    The first statement is the conditional UPDATE (a write), so on SQLite the transaction waits for the write
    lock instead of failing a read-to-write upgrade when two runs race.
    """

    def swap(condition: Any) -> bool:
        result = session.execute(
            update(QuarantineActionRow)
            .where(QuarantineActionRow.id == action_id, QuarantineActionRow.state == expected_state, condition)
            .values(lock_token=token)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0) == 1

    if swap(QuarantineActionRow.lock_token.is_(None)):
        return True
    old = session.scalar(select(QuarantineActionRow.lock_token).where(QuarantineActionRow.id == action_id))
    if old is None or not lock_is_stale(old):
        return False
    return swap(QuarantineActionRow.lock_token == old)


def _retry_locked(fn: Callable[[], Any], attempts: int = 40) -> Any:
    """Run a short ledger transaction again when SQLite reports the database locked by a concurrent run."""
    for attempt in range(attempts):
        try:
            return fn()
        except LedgerError as e:
            if "locked" not in str(e).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


# -- selection and plan -------------------------------------------------------------------------------------
@dataclass
class Selection:
    """Which findings to act on: explicit ids, or filters over the ledger (any combination)."""

    finding_ids: Sequence[int] = ()
    scan_id: int | None = None
    detectors: Sequence[str] = ()
    severity: Severity | None = None

    @property
    def empty(self) -> bool:
        return not (self.finding_ids or self.scan_id is not None or self.detectors or self.severity is not None)


@dataclass
class PlanItem:
    """What quarantine would do to one point, or why it will not."""

    collection_id: int
    collection: str
    source: str
    point_key: str
    point_id: PointId
    finding_ids: list[int]
    rule_ids: list[str]
    statuses: list[str]
    mode: str
    target: str | None
    flag_field: str
    last_scan_id: int
    skip: str | None = None
    existing_action: int | None = None

    @property
    def change(self) -> str:
        if self.skip:
            return f"skip: {self.skip}"
        if self.mode == "tag":
            return f"set payload field {self.flag_field!r} (retrieval with the guard filter excludes it)"
        return f"copy to {self.target!r}, then delete from {self.collection!r}"


def _select_findings(session: Session, selection: Selection) -> list[FindingRow]:
    if selection.empty:
        raise ConfigError("nothing selected", hint="give FINDING_ID..., --scan ID, --detector NAME or --severity LEVEL")
    stmt = select(FindingRow).order_by(FindingRow.id)
    if selection.finding_ids:
        stmt = stmt.where(FindingRow.id.in_(list(selection.finding_ids)))
    if selection.detectors:
        stmt = stmt.where(FindingRow.detector.in_(list(selection.detectors)))
    if selection.severity is not None:
        stmt = stmt.where(FindingRow.severity.in_([s.value for s in Severity if s >= selection.severity]))
    if selection.scan_id is not None:
        from auditor.ledger.models import FindingOccurrenceRow

        stmt = stmt.where(
            FindingRow.id.in_(
                select(FindingOccurrenceRow.finding_id).where(FindingOccurrenceRow.scan_id == selection.scan_id)
            )
        )
    rows = list(session.scalars(stmt))
    missing = set(selection.finding_ids) - {r.id for r in rows}
    if missing:
        raise ConfigError(
            f"no finding with id {', '.join(map(str, sorted(missing)))}", hint="see `vecaudit findings list`"
        )
    return rows


def _active_action(session: Session, collection_id: int, key: str) -> QuarantineActionRow | None:
    return session.scalar(
        select(QuarantineActionRow)
        .where(
            QuarantineActionRow.collection_id == collection_id,
            QuarantineActionRow.point_key == key,
            QuarantineActionRow.state.in_(ACTIVE_STATES),
        )
        .order_by(QuarantineActionRow.id)
        .limit(1)
    )


def plan(
    ledger: Ledger,
    selection: Selection,
    *,
    mode: str = "tag",
    flag_field: str = DEFAULT_FLAG_FIELD,
    force: bool = False,
) -> list[PlanItem]:
    """One item per point the selected findings name; ``skip`` says why a point would be left alone.

    Only ``confirmed`` findings are taken unless ``force``; explicitly named false positives, accepted or
    resolved findings are still skipped without ``force``. Reads the ledger only.
    """
    if mode not in ("tag", "move"):
        raise ConfigError(f"unknown quarantine mode {mode!r}", hint="use tag or move")
    if not flag_field or "." in flag_field:
        raise ConfigError(f"bad flag field {flag_field!r}", hint="a top-level payload key, e.g. vecaudit_quarantine")
    items: dict[tuple[int, str], PlanItem] = {}
    skipped: list[PlanItem] = []
    with ledger.session() as s:
        for f in _select_findings(s, selection):
            coll = f.collection
            target = f"{coll.name}{QUARANTINE_SUFFIX}" if mode == "move" else None

            def item_for(
                finding: FindingRow, pid: PointId, skip: str | None = None, coll: Any = coll, target: Any = target
            ) -> PlanItem:
                return PlanItem(
                    collection_id=coll.id,
                    collection=coll.name,
                    source=coll.source,
                    point_key=finding.point_key or "",
                    point_id=pid,
                    finding_ids=[finding.id] if skip else [],
                    rule_ids=[finding.rule_id] if skip else [],
                    statuses=[finding.status] if skip else [],
                    mode=mode,
                    target=target,
                    flag_field=flag_field,
                    last_scan_id=finding.last_scan_id,
                    skip=skip,
                )

            if f.point_key is None:
                skipped.append(item_for(f, "(collection)", "a collection-level finding names no point"))
                continue
            pid = _point_id(f.point_key)
            if f.status == "quarantined":
                continue  # its point is reported through its action below
            wanted = f.status == "confirmed" or (force and (f.status == "open" or bool(selection.finding_ids)))
            if not wanted:
                why = f"finding {f.id} is {f.status}, not confirmed (review it, or --force)"
                if f.status in ("false_positive", "accepted", "resolved"):
                    why = f"finding {f.id} is {f.status} (name it explicitly with --force to override)"
                skipped.append(item_for(f, pid, why))
                continue
            key = (coll.id, f.point_key)
            item = items.setdefault(key, item_for(f, pid))
            item.finding_ids.append(f.id)
            item.rule_ids.append(f.rule_id)
            item.statuses.append(f.status)
            item.last_scan_id = max(item.last_scan_id, f.last_scan_id)
        for item in items.values():
            active = _active_action(s, item.collection_id, item.point_key)
            if active is None:
                continue
            item.existing_action = active.id
            if active.state == "applied":
                item.skip = f"already quarantined by action {active.id} ({active.mode})"
            elif active.state == "releasing":
                item.skip = f"action {active.id} is being released (run `vecaudit quarantine recover`)"
    return [*items.values(), *skipped]


def _point_id(key: str) -> PointId:
    import json

    value = json.loads(key)
    return value if isinstance(value, (int, str)) else str(value)


# -- outcomes -----------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What happened to one point: the action row, its final state, and a sentence for the user."""

    point_id: PointId
    collection: str
    action_id: int | None
    state: str
    message: str
    ok: bool = True
    notes: list[str] = field(default_factory=list)


def _default_factory(source: str | None) -> ConnectorFactory:
    def make(coll: CollectionRow) -> Connector:
        from auditor.registry import connector_for

        return connector_for(source or reopenable(coll.source), collection=coll.name, vector=coll.vector_name)

    return make


def reopenable(source: str) -> str:
    """The ledger's redacted source as a URI again (``qdrant+local:/abs/path`` lost its ``//`` on the way)."""
    scheme, sep, rest = source.partition(":")
    if sep and rest.startswith("/") and not rest.startswith("//"):
        return f"{scheme}://{rest}"
    return source


def _check_capability(connector: Connector, mode: str) -> None:
    caps = type(connector).capabilities
    if f"quarantine:{mode}" not in caps:
        modes = sorted(c.split(":", 1)[1] for c in caps if c.startswith("quarantine:"))
        raise QuarantineError(
            f"{type(connector).__name__} cannot quarantine in {mode} mode",
            hint=f"modes it supports: {', '.join(modes)}"
            if modes
            else "this store is read-only for vecaudit (e.g. a file export): quarantine the points in the live store",
        )


def _recorded_version(session: Session, collection_id: int, key: str, scan_id: int) -> PointVersionRow | None:
    return session.scalar(
        select(PointVersionRow)
        .where(
            PointVersionRow.collection_id == collection_id,
            PointVersionRow.point_key == key,
            PointVersionRow.scan_id <= scan_id,
        )
        .order_by(PointVersionRow.id.desc())
        .limit(1)
    )


def fingerprint_drift(session: Session, action: QuarantineActionRow, point: StoredPoint, scan_id: int) -> str | None:
    """Why the stored point no longer matches what scan ``scan_id`` saw; None when it still matches."""
    version = _recorded_version(session, action.collection_id, action.point_key, scan_id)
    if version is None or version.change == "deleted":
        return f"the ledger holds no fingerprint of this point as of scan {scan_id}"
    coll = session.get(CollectionRow, action.collection_id)
    scan = session.get(ScanRow, version.scan_id)
    vector_name = (coll.vector_name if coll else None) or ""
    text_field = (scan.field_map or {}).get("text") if scan else None
    vector = point.vectors.get(vector_name)
    vh = vector_hash(None if vector is None else np.asarray(vector, dtype=np.float32))
    text = resolve_field(point.payload, text_field)
    th = text_hash(None if text is MISSING else text)
    changed = []
    if vh != version.vector_hash:
        changed.append("vector")
    if th != version.text_hash:
        changed.append("text")
    if payload_hash(point.payload) != version.payload_hash:
        changed.append("payload")
    if not changed:
        return None
    return f"its {' and '.join(changed)} changed since scan {version.scan_id} (rescan and review, or --force)"


# -- the state machine --------------------------------------------------------------------------------------
class Quarantine:
    """Runs quarantine actions against one ledger; a connector per collection from ``connector_factory``."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        actor: str | None = None,
        connector_factory: ConnectorFactory | None = None,
        source: str | None = None,
    ) -> None:
        self.ledger = ledger
        self.actor = actor or whoami()
        self.factory = connector_factory or _default_factory(source)

    # -- apply ------------------------------------------------------------------------------------------
    def apply(self, items: Sequence[PlanItem], *, force: bool = False, dry_run: bool = False) -> list[Outcome]:
        """Quarantine each planned point (skipped items are reported, not touched)."""
        outcomes: list[Outcome] = []
        groups: dict[int, list[PlanItem]] = {}
        for item in items:
            if item.skip:
                outcomes.append(
                    Outcome(item.point_id, item.collection, item.existing_action, "skipped", item.skip, ok=True)
                )
            else:
                groups.setdefault(item.collection_id, []).append(item)
        for collection_id, group in groups.items():
            with self._connector(collection_id) as connector:
                _check_capability(connector, group[0].mode)
                for item in group:
                    if dry_run:
                        outcomes.append(self._dry_run(connector, item, force))
                    else:
                        outcomes.append(self._apply_one(connector, item, force))
        return outcomes

    def _connector(self, collection_id: int) -> Connector:
        with self.ledger.session() as s:
            coll = s.get(CollectionRow, collection_id)
            if coll is None:
                raise QuarantineError(f"collection {collection_id} is not in the ledger")
            s.expunge(coll)
        return self.factory(coll)

    def _dry_run(self, connector: Connector, item: PlanItem, force: bool) -> Outcome:
        found = connector.fetch([item.point_id])
        if not found:
            return Outcome(item.point_id, item.collection, None, "dry-run", "point is not in the store", ok=False)
        probe = QuarantineActionRow(collection_id=item.collection_id, point_key=item.point_key)
        with self.ledger.session() as s:
            drift = fingerprint_drift(s, probe, found[0], item.last_scan_id)
        if drift and not force:
            return Outcome(item.point_id, item.collection, None, "dry-run", f"would refuse: {drift}", ok=False)
        return Outcome(item.point_id, item.collection, None, "dry-run", f"would {item.change}")

    def _claim(self, item: PlanItem, token: str) -> tuple[int | None, str | None]:
        """Create (or take over an abandoned) action for the point; ``(action_id, None)`` or ``(None, why not)``.

        Mutual exclusion without a unique index: a run commits its new row, then looks for any *other* active
        row on the point and withdraws its own if it finds one. Of two racing runs, the one that checks last
        always sees the other's committed row, so at most one proceeds (ids alone would not do: PostgreSQL
        hands out ids in insert order, not commit order). If both withdraw, they retry after a random pause.
        """
        for _ in range(6):
            outcome = _retry_locked(partial(self._claim_once, item, token))
            if outcome is not None:
                return outcome
            time.sleep(random.uniform(0.02, 0.2))
        return None, "other runs kept quarantining this point at the same time; run apply again"

    def _claim_once(self, item: PlanItem, token: str) -> tuple[int | None, str | None] | None:
        with self.ledger.session() as s:
            active = _active_action(s, item.collection_id, item.point_key)
            if active is not None:
                state, active_id, lock = active.state, active.id, active.lock_token
            else:
                row = QuarantineActionRow(
                    collection_id=item.collection_id,
                    point_key=item.point_key,
                    mode=item.mode,
                    state="planned",
                    finding_ids=list(item.finding_ids),
                    reason=", ".join(sorted(set(item.rule_ids))),
                    target=item.target,
                    flag_field=item.flag_field,
                    actor=self.actor,
                    lock_token=token,
                )
                s.add(row)
                s.flush()
                mine = row.id
        if active is None:
            with self.ledger.session() as s:
                rival = s.scalar(
                    select(QuarantineActionRow.id).where(
                        QuarantineActionRow.collection_id == item.collection_id,
                        QuarantineActionRow.point_key == item.point_key,
                        QuarantineActionRow.state.in_(ACTIVE_STATES),
                        QuarantineActionRow.id != mine,
                    )
                )
                if rival is None:
                    return mine, None
                # never touched the store and holds no backup: withdrawing it leaves nothing to audit
                s.execute(delete(QuarantineActionRow).where(QuarantineActionRow.id == mine))
            return None
        if state in ("applied", "releasing"):
            verb = "quarantined" if state == "applied" else "being released"
            return None, f"already {verb} by action {active_id}"
        with self.ledger.session() as s:
            if _take_lock(s, active_id, state, token):
                return active_id, None
        return None, f"action {active_id} is in progress in another run (lock {lock})"

    def _apply_one(self, connector: Connector, item: PlanItem, force: bool) -> Outcome:
        token = new_lock_token()
        action_id, why_not = self._claim(item, token)
        if action_id is None:
            return Outcome(item.point_id, item.collection, None, "skipped", why_not or "", ok=True)
        _fault_point("apply:claim")
        try:
            return self._drive_apply(connector, action_id, token, force=force, scan_id=item.last_scan_id)
        except (QuarantineError, ConnectorError) as e:
            self._set(action_id, token, lock_token=None, error=str(e))
            state = self._load(action_id).state
            return Outcome(item.point_id, item.collection, action_id, state, str(e), ok=False)

    def _load(self, action_id: int) -> QuarantineActionRow:
        with self.ledger.session() as s:
            row = s.get(QuarantineActionRow, action_id)
            if row is None:
                raise QuarantineError(f"no quarantine action {action_id}", hint="see `vecaudit quarantine list`")
            s.expunge(row)
            return row

    def _set(self, action_id: int, token: str, **values: Any) -> None:
        """Update the action only while we still hold its lock (a stolen lock means another run took over)."""
        with self.ledger.session() as s:
            result = s.execute(
                update(QuarantineActionRow)
                .where(QuarantineActionRow.id == action_id, QuarantineActionRow.lock_token == token)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if int(getattr(result, "rowcount", 0) or 0) != 1:
                raise QuarantineError(
                    f"quarantine action {action_id} was taken over by another run",
                    hint="see `vecaudit quarantine list`",
                )

    def _drive_apply(self, connector: Connector, action_id: int, token: str, *, force: bool, scan_id: int) -> Outcome:
        action = self._load(action_id)
        pid = _point_id(action.point_key)
        coll = connector.collection or ""
        if action.state == "planned":
            found = connector.fetch([pid])
            if not found:
                self._set(action_id, token, state="failed", lock_token=None, error="point is not in the store")
                return Outcome(pid, coll, action_id, "failed", "point is not in the store; nothing applied", ok=False)
            point = found[0]
            with self.ledger.session() as s:
                drift = fingerprint_drift(s, action, point, scan_id)
            if drift and not force:
                msg = f"refused: {drift}"
                self._set(action_id, token, state="failed", lock_token=None, error=msg)
                return Outcome(pid, coll, action_id, "failed", msg + "; nothing applied", ok=False)
            backup = encode_point(point)
            vector_name = connector.vector or ""
            vec = point.vectors.get(vector_name)
            text_field = self._text_field(scan_id)
            text = resolve_field(point.payload, text_field)
            version = point_version(
                vector_hash(None if vec is None else np.asarray(vec, dtype=np.float32)),
                text_hash(None if text is MISSING else text),
            )
            self._set(action_id, token, state="backed_up", backup=backup, point_version=version)
            _fault_point("apply:backup")
            action = self._load(action_id)
        if action.state != "backed_up":
            raise QuarantineError(f"quarantine action {action_id} is {action.state}, cannot apply")
        assert action.backup is not None
        original = decode_point(action.backup)
        try:
            notes = self._write_quarantine(connector, action, original)
        except ConnectorError as e:
            return self._undo_failed_apply(connector, action, original, token, e)
        with self.ledger.session() as s:
            result = s.execute(
                update(QuarantineActionRow)
                .where(QuarantineActionRow.id == action_id, QuarantineActionRow.lock_token == token)
                .values(state="applied", applied_at=utcnow(), lock_token=None, error="; ".join(notes) or None)
                .execution_options(synchronize_session=False)
            )
            if int(getattr(result, "rowcount", 0) or 0) != 1:
                raise QuarantineError(f"quarantine action {action_id} was taken over by another run")
            _set_findings(s, action.finding_ids, "quarantined", only_from=("open", "confirmed"))
        _fault_point("apply:mark")
        where = f"flagged {action.flag_field!r}" if action.mode == "tag" else f"moved to {action.target!r}"
        return Outcome(pid, coll, action_id, "applied", where, notes=notes)

    def _text_field(self, scan_id: int) -> str | None:
        with self.ledger.session() as s:
            scan = s.get(ScanRow, scan_id)
            return (scan.field_map or {}).get("text") if scan else None

    def _flag_value(self, action: QuarantineActionRow) -> dict[str, Any]:
        return {
            "action_id": action.id,
            "finding_ids": list(action.finding_ids or []),
            "reason": action.reason,
            "by": action.actor,
            "at": utcnow().isoformat(),
        }

    def _write_quarantine(self, connector: Connector, action: QuarantineActionRow, original: StoredPoint) -> list[str]:
        """The store side of apply; idempotent, so an interrupted run just does it again."""
        flag = action.flag_field or DEFAULT_FLAG_FIELD
        notes: list[str] = []
        if action.mode == "tag":
            live = connector.fetch([original.id])
            if not live:
                raise QuarantineError(
                    f"point {original.id} vanished from the store during quarantine action {action.id}",
                    hint="its backup is in the ledger: `vecaudit quarantine release` restores it",
                )
            connector.set_payload([original.id], {flag: self._flag_value(action)})
            _fault_point("apply:tag")
            return notes
        target = action.target or f"{connector.collection}{QUARANTINE_SUFFIX}"
        connector.ensure_collection_like(target)
        copy = connector.fetch_points([original.id], collection=target)
        if not copy or not _same_point(copy[0], original, flag):
            flagged = StoredPoint(original.id, original.vectors, {**original.payload, flag: self._flag_value(action)})
            connector.upsert_points([flagged], collection=target)
            copy = connector.fetch_points([original.id], collection=target)
            if not copy:
                raise ConnectorError(f"the copy of point {original.id} did not arrive in {target!r}")
            if not vectors_equal(copy[0], original):
                notes.append(f"the copy in {target} differs from the backup in the last bits (the backup is exact)")
        _fault_point("apply:copy")
        connector.delete_points([original.id])
        _fault_point("apply:delete")
        return notes

    def _undo_failed_apply(
        self, connector: Connector, action: QuarantineActionRow, original: StoredPoint, token: str, error: Exception
    ) -> Outcome:
        """The store refused a write: put back what we changed, then record that nothing was applied."""
        pid = original.id
        coll = connector.collection or ""
        try:
            self._restore_live(connector, action, original)
            if action.mode == "move" and action.target and connector.collection_exists(action.target):
                connector.delete_points([pid], collection=action.target)
        except VecauditError as undo_error:
            self._set(action.id, token, lock_token=None, error=f"store refused: {error}; undo failed: {undo_error}")
            return Outcome(
                pid,
                coll,
                action.id,
                "backed_up",
                f"store refused the write ({error}) and the undo failed; run `vecaudit quarantine recover`",
                ok=False,
            )
        self._set(action.id, token, state="failed", lock_token=None, error=f"store refused the write: {error}")
        return Outcome(pid, coll, action.id, "failed", f"store refused the write: {error}; nothing applied", ok=False)

    # -- release ----------------------------------------------------------------------------------------
    def release(
        self, action_ids: Sequence[int] = (), *, point: str | None = None, force: bool = False
    ) -> list[Outcome]:
        """Restore quarantined points bit-exactly from their ledger backups."""
        ids = list(action_ids)
        with self.ledger.session() as s:
            if point is not None:
                keys = [point_key(c) for c in parse_point_id(point)]
                ids += list(
                    s.scalars(
                        select(QuarantineActionRow.id).where(
                            QuarantineActionRow.point_key.in_(keys),
                            QuarantineActionRow.state.in_(("applied", "releasing")),
                        )
                    )
                )
            if not ids:
                raise ConfigError(
                    "nothing to release", hint="give ACTION_ID... or --point ID (`vecaudit quarantine list`)"
                )
            rows = {r.id: r for r in s.scalars(select(QuarantineActionRow).where(QuarantineActionRow.id.in_(ids)))}
            missing = set(ids) - set(rows)
            if missing:
                raise ConfigError(f"no quarantine action {', '.join(map(str, sorted(missing)))}")
            plan_ = [(r.id, r.collection_id, r.state, r.point_key) for r in rows.values()]
        outcomes = []
        by_collection: dict[int, list[tuple[int, str, str]]] = {}
        for aid, cid, state, key in sorted(plan_):
            if state not in ("applied", "releasing"):
                outcomes.append(Outcome(_point_id(key), "", aid, state, f"action {aid} is {state}, not applied"))
                continue
            by_collection.setdefault(cid, []).append((aid, state, key))
        for cid, group in by_collection.items():
            with self._connector(cid) as connector:
                for aid, state, key in group:
                    token = new_lock_token()
                    taken = _retry_locked(partial(self._claim_release, aid, state, token))
                    if not taken:
                        outcomes.append(
                            Outcome(
                                _point_id(key),
                                connector.collection or "",
                                aid,
                                state,
                                f"action {aid} is being handled by another run",
                                ok=True,
                            )
                        )
                        continue
                    _fault_point("release:claim")
                    outcomes.append(self._drive_release(connector, aid, token, force=force))
        return outcomes

    def _claim_release(self, action_id: int, state: str, token: str) -> bool:
        """Lock an applied action and mark it releasing in one transaction (or take over a stale release)."""
        with self.ledger.session() as s:
            if state == "releasing":
                return _take_lock(s, action_id, "releasing", token)
            if not _take_lock(s, action_id, "applied", token):
                return False
            s.execute(
                update(QuarantineActionRow)
                .where(QuarantineActionRow.id == action_id)
                .values(state="releasing", released_by=self.actor)
                .execution_options(synchronize_session=False)
            )
            return True

    def _drive_release(self, connector: Connector, action_id: int, token: str, *, force: bool) -> Outcome:
        action = self._load(action_id)
        assert action.backup is not None
        original = decode_point(action.backup)
        flag = action.flag_field or DEFAULT_FLAG_FIELD
        coll = connector.collection or ""
        if action.mode == "tag" and not force:
            live = connector.fetch([original.id])
            if live and not (
                vectors_equal(live[0], original) and without_flag(live[0].payload, flag) == original.payload
            ):
                self._set(action_id, token, state="applied", lock_token=None, released_by=None)
                return Outcome(
                    original.id,
                    coll,
                    action_id,
                    "applied",
                    "the point changed while quarantined; release would overwrite that change (use --force)",
                    ok=False,
                )
        try:
            notes = self._restore_live(connector, action, original)
            _fault_point("release:restore")
            if action.mode == "move" and action.target and connector.collection_exists(action.target):
                connector.delete_points([original.id], collection=action.target)
                _fault_point("release:delete_copy")
        except VecauditError as e:
            self._set(action_id, token, lock_token=None, error=f"release interrupted: {e}")
            return Outcome(original.id, coll, action_id, "releasing", f"release failed: {e} (re-run it)", ok=False)
        with self.ledger.session() as s:
            result = s.execute(
                update(QuarantineActionRow)
                .where(QuarantineActionRow.id == action_id, QuarantineActionRow.lock_token == token)
                .values(
                    state="released",
                    released_by=self.actor,
                    released_at=utcnow(),
                    lock_token=None,
                    error="; ".join(notes) or None,
                )
                .execution_options(synchronize_session=False)
            )
            if int(getattr(result, "rowcount", 0) or 0) != 1:
                raise QuarantineError(f"quarantine action {action_id} was taken over by another run")
            _set_findings(s, action.finding_ids, "confirmed", only_from=("quarantined",))
        _fault_point("release:mark")
        return Outcome(original.id, coll, action_id, "released", "restored from the ledger backup", notes=notes)

    def _restore_live(self, connector: Connector, action: QuarantineActionRow, original: StoredPoint) -> list[str]:
        """Make the live collection hold exactly the backed-up point (idempotent); notes any bit it cannot."""
        live = connector.fetch([original.id])
        if action.mode == "tag" and live and vectors_equal(live[0], original):
            if live[0].payload != original.payload:
                connector.overwrite_payload([original.id], original.payload)
            return []
        if live and vectors_equal(live[0], original) and live[0].payload == original.payload:
            return []
        connector.upsert_points([original])
        back = connector.fetch([original.id])
        if not back:
            raise ConnectorError(f"point {original.id} did not reappear in {connector.collection!r}")
        if back[0].payload != original.payload:
            raise ConnectorError(f"point {original.id} came back with a different payload")
        if not vectors_equal(back[0], original):
            return [f"point {original.id}: the store altered restored vectors in the last bits (backup kept)"]
        return []

    # -- recover ----------------------------------------------------------------------------------------
    def recover(self, *, rollback: bool = False) -> list[Outcome]:
        """Finish every interrupted action whose run is gone: applies roll forward (or back with
        ``rollback``), releases always roll forward (restoring the original is the safe direction)."""
        with self.ledger.session() as s:
            rows = list(
                s.scalars(
                    select(QuarantineActionRow)
                    .where(QuarantineActionRow.state.in_(UNFINISHED_STATES))
                    .order_by(QuarantineActionRow.id)
                )
            )
            todo = [(r.id, r.collection_id, r.state, r.point_key, r.lock_token) for r in rows]
        outcomes: list[Outcome] = []
        by_collection: dict[int, list[tuple[int, str, str, str | None]]] = {}
        for aid, cid, state, key, lock in todo:
            if not lock_is_stale(lock):
                outcomes.append(Outcome(_point_id(key), "", aid, state, f"still running (lock {lock})"))
                continue
            by_collection.setdefault(cid, []).append((aid, state, key, lock))
        for cid, group in by_collection.items():
            with self._connector(cid) as connector:
                for aid, state, key, _ in group:
                    token = new_lock_token()
                    if not _retry_locked(partial(self._lock, aid, state, token)):
                        outcomes.append(Outcome(_point_id(key), "", aid, state, "taken over by another run"))
                        continue
                    try:
                        if state == "releasing":
                            outcomes.append(self._drive_release(connector, aid, token, force=True))
                        elif rollback:
                            outcomes.append(self._roll_back(connector, aid, token))
                        else:
                            scan_id = self._finding_scan(aid)
                            outcomes.append(self._drive_apply(connector, aid, token, force=False, scan_id=scan_id))
                    except VecauditError as e:
                        self._set(aid, token, lock_token=None, error=str(e))
                        outcomes.append(
                            Outcome(_point_id(key), connector.collection or "", aid, state, str(e), ok=False)
                        )
        return outcomes

    def _lock(self, action_id: int, state: str, token: str) -> bool:
        with self.ledger.session() as s:
            return _take_lock(s, action_id, state, token)

    def _finding_scan(self, action_id: int) -> int:
        with self.ledger.session() as s:
            action = s.get(QuarantineActionRow, action_id)
            ids = list(action.finding_ids or []) if action else []
            scans = [f.last_scan_id for f in s.scalars(select(FindingRow).where(FindingRow.id.in_(ids)))]
            return max(scans) if scans else 0

    def _roll_back(self, connector: Connector, action_id: int, token: str) -> Outcome:
        action = self._load(action_id)
        pid = _point_id(action.point_key)
        if action.backup is not None:
            original = decode_point(action.backup)
            self._restore_live(connector, action, original)
            if action.mode == "move" and action.target and connector.collection_exists(action.target):
                connector.delete_points([original.id], collection=action.target)
        self._set(action_id, token, state="rolled_back", lock_token=None)
        return Outcome(pid, connector.collection or "", action_id, "rolled_back", "interrupted apply undone")


def _same_point(stored: StoredPoint, original: StoredPoint, flag: str) -> bool:
    return vectors_equal(stored, original) and without_flag(stored.payload, flag) == original.payload


def _set_findings(
    session: Session, finding_ids: Sequence[int] | None, status: str, *, only_from: tuple[str, ...]
) -> None:
    if not finding_ids:
        return
    if status == "confirmed":
        # a finding still covered by another applied action stays quarantined
        still = {
            fid
            for a in session.scalars(select(QuarantineActionRow).where(QuarantineActionRow.state == "applied"))
            for fid in (a.finding_ids or [])
        }
        finding_ids = [f for f in finding_ids if f not in still]
    session.execute(
        update(FindingRow)
        .where(FindingRow.id.in_(list(finding_ids)), FindingRow.status.in_(only_from))
        .values(status=status)
        .execution_options(synchronize_session=False)
    )


def list_actions(
    ledger: Ledger, *, states: Sequence[str] | None = None, point: str | None = None
) -> list[QuarantineActionRow]:
    """Quarantine actions, newest first, optionally by state or point id."""
    with ledger.session() as s:
        stmt = select(QuarantineActionRow).order_by(QuarantineActionRow.id.desc())
        if states:
            stmt = stmt.where(QuarantineActionRow.state.in_(list(states)))
        if point is not None:
            keys = [point_key(c) for c in parse_point_id(point)]
            stmt = stmt.where(or_(*(QuarantineActionRow.point_key == k for k in keys)))
        rows = list(s.scalars(stmt))
        for r in rows:
            s.expunge(r)
        return rows
