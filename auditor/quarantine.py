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
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any

import numpy as np
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from auditor.backupcrypt import (
    HOW_TO_SET,
    KEY_ENV,
    KEY_FILE_ENV,
    BackupKeys,
    is_encrypted,
    is_purged,
    purged,
)
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
    """The exact point a format-1 backup document holds (vectors as Python floats of the float32 values)."""
    vectors = {
        name: np.frombuffer(base64.b64decode(v["f32le"]), dtype="<f4").astype(np.float32).tolist()
        for name, v in doc["vectors"].items()
    }
    return StoredPoint(id=doc["id"], vectors=vectors, payload=dict(doc["payload"]))


def vectors_equal(a: StoredPoint, b: StoredPoint) -> bool:
    """Every named vector present in both with identical float32 bits."""
    return not vector_differences(a, b)


def vector_differences(got: StoredPoint, want: StoredPoint) -> dict[str, int | None]:
    """Per vector name where ``got`` differs from ``want``: the largest distance in float32 ulps, or None when
    the vector is missing, has another length, or a NaN changed (no ulp distance exists)."""
    out: dict[str, int | None] = {}
    for name in set(got.vectors) | set(want.vectors):
        if name not in got.vectors or name not in want.vectors:
            out[name] = None
            continue
        x = np.ascontiguousarray(got.vectors[name], dtype="<f4")
        y = np.ascontiguousarray(want.vectors[name], dtype="<f4")
        if x.tobytes() == y.tobytes():
            continue
        if x.shape != y.shape or bool(np.any(np.isnan(x) | np.isnan(y))):
            out[name] = None
            continue
        out[name] = int(np.max(np.abs(_ordered_bits(x) - _ordered_bits(y))))
    return out


def _ordered_bits(values: np.ndarray) -> np.ndarray:
    """float32 bit patterns on one integer line where neighbouring floats differ by 1 (-0.0 one below 0.0)."""
    bits = values.view("<i4").astype(np.int64)
    return np.where(bits < 0, -(bits & 0x7FFFFFFF) - 1, bits)


def describe_differences(point_id: PointId, diffs: dict[str, int | None], where: str) -> str:
    """A note naming each altered vector and by how much, e.g. ``point 7: vector up to 2 ulp off ...``."""
    parts = []
    for name, ulp in sorted(diffs.items()):
        label = f"vector {name!r}" if name else "vector"
        parts.append(f"{label} {'changed' if ulp is None else f'up to {ulp} ulp off'}")
    return f"point {point_id}: {', '.join(parts)} in {where} after reopening the store (the ledger backup is exact)"


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


# -- sensitive content ----------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def masking_detectors() -> tuple[str, ...]:
    """Entry-point names of the registered detectors that find secrets and personal data (``TextMasker``)."""
    from auditor.masking import TextMasker
    from auditor.registry import detector_classes

    return tuple(
        sorted(
            name for name, cls in detector_classes().items() if isinstance(cls, type) and issubclass(cls, TextMasker)
        )
    )


def payload_strings(value: Any) -> list[str]:
    """Every string of a JSON-like payload, keys included, nested values included."""
    out: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            out.extend(str(k) for k in item)
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return out


def payload_is_sensitive(payload: Any) -> bool:
    """Whether a string of ``payload`` holds a value the registered secret/PII scanners find. Fails closed: True
    when no scanner is installed or one fails, since the answer decides whether a backup may be kept in clear."""
    from auditor.masking import text_maskers

    try:
        maskers = text_maskers()
        if not maskers:
            return True
        return any(m.masked_spans(text) for text in payload_strings(payload) for m in maskers)
    except Exception as e:
        log.warning("the secret scan of a payload failed (%s); treating the payload as sensitive", type(e).__name__)
        return True


def sensitive_reason(session: Session, collection_id: int, key: str, payload: Any | None) -> str | None:
    """Why a point's backup must not be kept in clear: a secret/PII finding on it in the ledger, or such a value
    in its payload now; None when neither."""
    rules = sorted(
        set(
            session.scalars(
                select(FindingRow.rule_id).where(
                    FindingRow.collection_id == collection_id,
                    FindingRow.point_key == key,
                    FindingRow.detector.in_(list(masking_detectors())),
                )
            )
        )
    )
    if rules:
        return f"finding {'/'.join(rules)}"
    if payload is not None and payload_is_sensitive(payload):
        return "a secret or personal value in its payload"
    return None


# -- the state machine --------------------------------------------------------------------------------------
@dataclass
class _Written:
    """An action whose store writes are done: it is verified by reading the store back after reopening it,
    then marked ``final`` (applied, released or rolled_back)."""

    action: QuarantineActionRow
    original: StoredPoint
    token: str
    final: str
    collection: str
    holder: str | None = None  # the collection that now holds the point; None for the audited one
    notes: list[str] = field(default_factory=list)


class _FromEnv:
    """Default of ``Quarantine(keys=...)``: the keys set in the environment."""


FROM_ENV = _FromEnv()


class Quarantine:
    """Runs quarantine actions against one ledger; a connector per collection from ``connector_factory``.

    ``keys``: the backup keys (:class:`~auditor.backupcrypt.BackupKeys`); by default those in the environment
    (``VECAUDIT_QUARANTINE_KEY`` / ``VECAUDIT_QUARANTINE_KEY_FILE``), None for none. With keys every backup is
    encrypted; without, a point holding a secret or personal data is refused and the others are kept in clear.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        actor: str | None = None,
        connector_factory: ConnectorFactory | None = None,
        source: str | None = None,
        keys: BackupKeys | _FromEnv | None = FROM_ENV,
    ) -> None:
        self.ledger = ledger
        self.actor = actor or whoami()
        self.factory = connector_factory or _default_factory(source)
        self.keys = BackupKeys.from_env() if isinstance(keys, _FromEnv) else keys
        #: Run-level warnings for the user (a backup kept in clear), each said once.
        self.warnings: list[str] = []

    # -- backups ----------------------------------------------------------------------------------------
    def _backup_doc(self, point: StoredPoint) -> dict[str, Any]:
        """The ledger form of a backup: encrypted when a key is set, else in clear (with a warning once)."""
        doc = encode_point(point)
        if self.keys is not None:
            return self.keys.seal(doc)
        if not self.warnings:
            self.warnings.append(f"quarantine backups are kept in clear in the ledger (no key set): {HOW_TO_SET}")
            log.warning("%s", self.warnings[-1])
        return doc

    def _original(self, action: QuarantineActionRow) -> StoredPoint:
        """The exact point the action's backup holds (decrypted when it is encrypted)."""
        doc = action.backup
        if doc is None:
            raise QuarantineError(f"quarantine action {action.id} holds no backup")
        if is_purged(doc):
            raise QuarantineError(
                f"the backup of quarantine action {action.id} was purged after its release",
                hint="the ledger keeps its hashes only; nothing to restore",
            )
        if is_encrypted(doc):
            if self.keys is None:
                raise ConfigError(
                    f"the backup of quarantine action {action.id} is encrypted (key {doc.get('key_id')}) and no key "
                    "is set",
                    hint=f"set {KEY_ENV} or {KEY_FILE_ENV} to that key",
                )
            doc = self.keys.open(doc, action_id=action.id)
        return decode_point(doc)

    def check_backups(self, action_ids: Sequence[int]) -> None:
        """Open every backup the actions hold before anything is touched, so a missing or wrong key stops the run
        with one error while store and ledger stay unchanged."""
        with self.ledger.session() as s:
            rows = list(s.scalars(select(QuarantineActionRow).where(QuarantineActionRow.id.in_(list(action_ids)))))
            for r in rows:
                s.expunge(r)
        for r in rows:
            if r.backup is not None and not is_purged(r.backup):
                self._original(r)

    # -- apply ------------------------------------------------------------------------------------------
    def apply(self, items: Sequence[PlanItem], *, force: bool = False, dry_run: bool = False) -> list[Outcome]:
        """Quarantine each planned point (skipped items are reported, not touched).

        Every refusal that concerns the whole run (a mode the store lacks; without a backup key, a point holding
        a secret or personal data) is raised before the first write."""
        groups: dict[int, list[PlanItem]] = {}
        for item in items:
            if not item.skip:
                groups.setdefault(item.collection_id, []).append(item)
        done: dict[int, Outcome] = {}
        with ExitStack() as stack:
            connectors = {cid: stack.enter_context(self._connector(cid)) for cid in groups}
            for cid, group in groups.items():
                _check_capability(connectors[cid], group[0].mode)
                if not dry_run and self.keys is None:
                    self._refuse_sensitive(connectors[cid], group)
            for cid, group in groups.items():
                connector = connectors[cid]
                written: list[tuple[int, _Written]] = []
                for item in group:
                    result = (
                        self._dry_run(connector, item, force) if dry_run else self._apply_one(connector, item, force)
                    )
                    if isinstance(result, _Written):
                        written.append((id(item), result))
                    else:
                        done[id(item)] = result
                finished = self._finish(connector, [w for _, w in written])
                done.update(zip([key for key, _ in written], finished, strict=True))
        return [
            done[id(item)]
            if not item.skip
            else Outcome(item.point_id, item.collection, item.existing_action, "skipped", item.skip, ok=True)
            for item in items
        ]

    def _refuse_sensitive(self, connector: Connector, group: Sequence[PlanItem]) -> None:
        """ConfigError naming the points whose backup would put a secret or personal data into the ledger."""
        found = {point_key(p.id): p for p in connector.fetch([i.point_id for i in group])}
        refused = []
        with self.ledger.session() as s:
            for item in group:
                point = found.get(item.point_key)
                why = sensitive_reason(s, item.collection_id, item.point_key, point.payload if point else None)
                if why:
                    refused.append(f"{item.point_id} ({why})")
        if refused:
            more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
            raise ConfigError(
                f"no backup key is set and point(s) {', '.join(refused[:5])}{more} of {group[0].collection!r} hold "
                "secrets or personal data, whose backups must not be kept in clear in the ledger; nothing was "
                "changed",
                hint=HOW_TO_SET,
            )

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
            sensitive = None if self.keys else sensitive_reason(s, item.collection_id, item.point_key, found[0].payload)
        if drift and not force:
            return Outcome(item.point_id, item.collection, None, "dry-run", f"would refuse: {drift}", ok=False)
        if sensitive:
            why = f"would refuse: it holds {sensitive} and no backup key is set ({HOW_TO_SET})"
            return Outcome(item.point_id, item.collection, None, "dry-run", why, ok=False)
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

    def _apply_one(self, connector: Connector, item: PlanItem, force: bool) -> Outcome | _Written:
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

    def _drive_apply(
        self, connector: Connector, action_id: int, token: str, *, force: bool, scan_id: int
    ) -> Outcome | _Written:
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
                sensitive = (
                    None if self.keys else sensitive_reason(s, action.collection_id, action.point_key, point.payload)
                )
            refusal = f"refused: {drift}" if drift and not force else None
            if refusal is None and sensitive:
                # the run-level check passed, so the point changed since: still never a secret in clear
                refusal = f"refused: the point holds {sensitive} and no backup key is set ({HOW_TO_SET})"
            if refusal:
                self._set(action_id, token, state="failed", lock_token=None, error=refusal)
                return Outcome(pid, coll, action_id, "failed", refusal + "; nothing applied", ok=False)
            backup = self._backup_doc(point)
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
        original = self._original(action)
        try:
            self._write_quarantine(connector, action, original)
        except ConnectorError as e:
            return self._undo_failed_apply(connector, action, original, token, e)
        holder = (action.target or f"{coll}{QUARANTINE_SUFFIX}") if action.mode == "move" else None
        return _Written(action, original, token, "applied", coll, holder)

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

    def _write_quarantine(self, connector: Connector, action: QuarantineActionRow, original: StoredPoint) -> None:
        """The store side of apply; idempotent, so an interrupted run just does it again."""
        flag = action.flag_field or DEFAULT_FLAG_FIELD
        if action.mode == "tag":
            live = connector.fetch([original.id])
            if not live:
                raise QuarantineError(
                    f"point {original.id} vanished from the store during quarantine action {action.id}",
                    hint="its backup is in the ledger: `vecaudit quarantine release` restores it",
                )
            connector.set_payload([original.id], {flag: self._flag_value(action)})
            _fault_point("apply:tag")
            return
        target = action.target or f"{connector.collection}{QUARANTINE_SUFFIX}"
        connector.ensure_collection_like(target)
        copy = connector.fetch_points([original.id], collection=target)
        if not copy or not _same_point(copy[0], original, flag):
            flagged = StoredPoint(original.id, original.vectors, {**original.payload, flag: self._flag_value(action)})
            connector.upsert_points([flagged], collection=target)
            if not connector.fetch_points([original.id], collection=target):
                raise ConnectorError(f"the copy of point {original.id} did not arrive in {target!r}")
        _fault_point("apply:copy")
        connector.delete_points([original.id])
        _fault_point("apply:delete")

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
    # -- release ----------------------------------------------------------------------------------------
    def release(
        self,
        action_ids: Sequence[int] = (),
        *,
        point: str | None = None,
        force: bool = False,
        purge_backup: bool = False,
    ) -> list[Outcome]:
        """Restore quarantined points bit-exactly from their ledger backups, verified by reading them back after
        reopening the store. ``purge_backup`` then erases each backup the store gave back bit for bit (hashes
        stay); it also purges an action released earlier whose live point still equals its backup (any, with
        ``force``)."""
        ids = list(action_ids)
        releasable = ("applied", "releasing", "released") if purge_backup else ("applied", "releasing")
        with self.ledger.session() as s:
            if point is not None:
                keys = [point_key(c) for c in parse_point_id(point)]
                ids += list(
                    s.scalars(
                        select(QuarantineActionRow.id).where(
                            QuarantineActionRow.point_key.in_(keys), QuarantineActionRow.state.in_(releasable)
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
            plan_ = [(r.id, r.collection_id, r.state, r.point_key, is_purged(r.backup)) for r in rows.values()]
        outcomes = []
        by_collection: dict[int, list[tuple[int, str, str]]] = {}
        for aid, cid, state, key, gone in sorted(plan_):
            if state not in releasable or (state == "released" and gone):
                why = "its backup is already purged" if state in releasable else f"action {aid} is {state}, not applied"
                outcomes.append(Outcome(_point_id(key), "", aid, state, why))
                continue
            by_collection.setdefault(cid, []).append((aid, state, key))
        # a forced purge of an earlier release opens nothing: it also erases a backup whose key is lost
        self.check_backups(
            [aid for group in by_collection.values() for aid, state, _ in group if not (force and state == "released")]
        )
        for cid, group in by_collection.items():
            with self._connector(cid) as connector:
                written: list[_Written] = []
                released_before: list[int] = []
                for aid, state, key in group:
                    if state == "released":
                        released_before.append(aid)
                        continue
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
                    result = self._drive_release(connector, aid, token, force=force)
                    if isinstance(result, _Written):
                        written.append(result)
                    else:
                        outcomes.append(result)
                outcomes.extend(self._finish(connector, written, purge_backup=purge_backup))
                outcomes.extend(self._purge_released(connector, released_before, force=force))
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

    def _drive_release(self, connector: Connector, action_id: int, token: str, *, force: bool) -> Outcome | _Written:
        action = self._load(action_id)
        original = self._original(action)
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
            self._restore_live(connector, action, original)
            _fault_point("release:restore")
            if action.mode == "move" and action.target and connector.collection_exists(action.target):
                connector.delete_points([original.id], collection=action.target)
                _fault_point("release:delete_copy")
        except VecauditError as e:
            self._set(action_id, token, lock_token=None, error=f"release interrupted: {e}")
            return Outcome(original.id, coll, action_id, "releasing", f"release failed: {e} (re-run it)", ok=False)
        return _Written(action, original, token, "released", coll)

    def _restore_live(self, connector: Connector, action: QuarantineActionRow, original: StoredPoint) -> None:
        """Make the live collection hold the backed-up point (idempotent). The original bits are written as they
        are: a store that keeps vectors as written gives them back exactly once reopened (Qdrant local mode
        normalises only its in-memory copy of a Cosine vector); :meth:`_finish` reads them back and notes any
        store that altered them."""
        live = connector.fetch([original.id])
        if action.mode == "tag" and live and vectors_equal(live[0], original):
            if live[0].payload != original.payload:
                connector.overwrite_payload([original.id], original.payload)
            return
        if live and vectors_equal(live[0], original) and live[0].payload == original.payload:
            return
        connector.upsert_points([original])
        if not connector.fetch([original.id]):
            raise ConnectorError(f"point {original.id} did not reappear in {connector.collection!r}")

    # -- verification after reopening, and the final mark -------------------------------------------------
    def _finish(
        self, connector: Connector, written: Sequence[_Written], *, purge_backup: bool = False
    ) -> list[Outcome]:
        """Read every written point back from a reopened store, then mark each action: the outcome notes every
        vector the store did not give back bit for bit (with its ulp distance)."""
        if not written:
            return []
        found = self._reread(connector, [(w.holder, w.original.id) for w in written])
        return [self._mark(w, found.get((w.holder, point_key(w.original.id))), purge_backup) for w in written]

    @staticmethod
    def _reread(
        connector: Connector, wanted: Sequence[tuple[str | None, PointId]]
    ) -> dict[tuple[str | None, str], StoredPoint]:
        """The points as a new client sees them: ``close()`` drops the client and every connector opens a new one
        on first use (a store's in-process copy can differ from what it persisted, e.g. Qdrant local mode)."""
        connector.close()
        by_holder: dict[str | None, list[PointId]] = {}
        for holder, pid in wanted:
            by_holder.setdefault(holder, []).append(pid)
        found = {}
        for holder, ids in by_holder.items():
            for p in connector.fetch_points(ids, collection=holder):
                found[(holder, point_key(p.id))] = p
        return found

    def _mark(self, w: _Written, back: StoredPoint | None, purge_backup: bool) -> Outcome:
        action, pid, flag = w.action, w.original.id, w.action.flag_field or DEFAULT_FLAG_FIELD
        where = w.holder or w.collection
        problem = None
        if back is None:
            problem = f"point {pid} is not in {where!r} after reopening the store"
        elif w.final == "applied" and flag not in back.payload:
            problem = f"point {pid} has no {flag!r} flag in {where!r} after reopening the store"
        elif (without_flag(back.payload, flag) if w.final == "applied" else back.payload) != w.original.payload:
            problem = f"point {pid} came back with another payload in {where!r}"
        if problem:
            self._set(action.id, w.token, lock_token=None, error=problem)
            state = self._load(action.id).state
            return Outcome(pid, w.collection, action.id, state, f"{problem} (re-run it)", ok=False)
        assert back is not None
        diffs = vector_differences(back, w.original)
        notes = [*w.notes, describe_differences(pid, diffs, repr(where))] if diffs else list(w.notes)
        values: dict[str, Any] = {"state": w.final, "lock_token": None, "error": "; ".join(notes) or None}
        if w.final == "applied":
            values["applied_at"] = utcnow()
        elif w.final == "released":
            values.update(released_by=self.actor, released_at=utcnow())
            if purge_backup and not diffs:
                values["backup"] = purged(action.backup or {}, by=self.actor, at=utcnow().isoformat())
            elif purge_backup:
                notes.append("backup kept: the store did not give the point back bit for bit")
        with self.ledger.session() as s:
            result = s.execute(
                update(QuarantineActionRow)
                .where(QuarantineActionRow.id == action.id, QuarantineActionRow.lock_token == w.token)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if int(getattr(result, "rowcount", 0) or 0) != 1:
                raise QuarantineError(f"quarantine action {action.id} was taken over by another run")
            if w.final == "applied":
                _set_findings(s, action.finding_ids, "quarantined", only_from=("open", "confirmed"))
            elif w.final == "released":
                _set_findings(s, action.finding_ids, "confirmed", only_from=("quarantined",))
        if w.final == "applied":
            _fault_point("apply:mark")
            done = f"flagged {action.flag_field!r}" if action.mode == "tag" else f"moved to {action.target!r}"
        elif w.final == "released":
            _fault_point("release:mark")
            done = "restored from the ledger backup" + (", backup purged" if "backup" in values else "")
        else:
            done = "interrupted apply undone"
        return Outcome(pid, w.collection, action.id, w.final, done, notes=notes)

    def _purge_released(self, connector: Connector, action_ids: Sequence[int], *, force: bool) -> list[Outcome]:
        """Purge the backups of actions released earlier, each only while the live point (read from the reopened
        store) still equals it bit for bit; with ``force`` without looking (or decrypting)."""
        if not action_ids:
            return []
        actions = [self._load(aid) for aid in action_ids]
        found = {} if force else self._reread(connector, [(None, _point_id(a.point_key)) for a in actions])
        coll = connector.collection or ""
        outcomes = []
        for action in actions:
            pid = _point_id(action.point_key)
            if not force:
                original, live = self._original(action), found.get((None, action.point_key))
                if live is None or vector_differences(live, original) or live.payload != original.payload:
                    why = "the live point no longer equals the backup; backup kept (--force purges it anyway)"
                    outcomes.append(Outcome(pid, coll, action.id, "released", why, ok=False))
                    continue
            with self.ledger.session() as s:
                s.execute(
                    update(QuarantineActionRow)
                    .where(QuarantineActionRow.id == action.id, QuarantineActionRow.state == "released")
                    .values(backup=purged(action.backup or {}, by=self.actor, at=utcnow().isoformat()))
                    .execution_options(synchronize_session=False)
                )
            outcomes.append(Outcome(pid, coll, action.id, "released", "backup purged"))
        return outcomes

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
        self.check_backups([aid for group in by_collection.values() for aid, _, _, _ in group])
        for cid, group in by_collection.items():
            with self._connector(cid) as connector:
                written: list[_Written] = []
                for aid, state, key, _ in group:
                    token = new_lock_token()
                    if not _retry_locked(partial(self._lock, aid, state, token)):
                        outcomes.append(Outcome(_point_id(key), "", aid, state, "taken over by another run"))
                        continue
                    try:
                        if state == "releasing":
                            result = self._drive_release(connector, aid, token, force=True)
                        elif rollback:
                            result = self._roll_back(connector, aid, token)
                        else:
                            scan_id = self._finding_scan(aid)
                            result = self._drive_apply(connector, aid, token, force=False, scan_id=scan_id)
                    except VecauditError as e:
                        self._set(aid, token, lock_token=None, error=str(e))
                        result = Outcome(_point_id(key), connector.collection or "", aid, state, str(e), ok=False)
                    if isinstance(result, _Written):
                        written.append(result)
                    else:
                        outcomes.append(result)
                outcomes.extend(self._finish(connector, written))
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

    def _roll_back(self, connector: Connector, action_id: int, token: str) -> Outcome | _Written:
        action = self._load(action_id)
        pid = _point_id(action.point_key)
        coll = connector.collection or ""
        if action.backup is None:  # never backed up, so the store was never touched
            self._set(action_id, token, state="rolled_back", lock_token=None)
            return Outcome(pid, coll, action_id, "rolled_back", "interrupted apply undone")
        original = self._original(action)
        self._restore_live(connector, action, original)
        if action.mode == "move" and action.target and connector.collection_exists(action.target):
            connector.delete_points([original.id], collection=action.target)
        return _Written(action, original, token, "rolled_back", coll)


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
