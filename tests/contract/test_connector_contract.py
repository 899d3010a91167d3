"""The connector contract, run unchanged against every connector on its real engine: complete pagination,
resumable cursors, describe(), bit-exact fetch, field-map resolution, read-only scans, and quarantine
(tag / move / release restore the original point; stores that cannot write refuse cleanly)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from connector_stores import Snapshot, StoreCase
from sqlalchemy import select
from support import run_scan

from auditor.batching import resolve_batch
from auditor.connector import Connector, cursor_from_json, cursor_to_json
from auditor.errors import ConnectorError, QuarantineError
from auditor.findings import point_key
from auditor.ledger import Ledger
from auditor.ledger.models import CollectionRow
from auditor.quarantine import PlanItem, Quarantine
from auditor.registry import connector_for
from auditor.types import PointBatch, StoredPoint


def _open(store: StoreCase) -> Connector:
    return connector_for(store.uri, collection=store.collection)


def _read_all(store: StoreCase, batch_size: int) -> tuple[list[str], list[object]]:
    ids: list[str] = []
    cursors: list[object] = []
    with _open(store) as conn:
        for batch, cursor in conn.iter_batches(batch_size=batch_size):
            assert 0 < len(batch) <= batch_size
            assert len(batch.vectors) == len(batch.payloads) == len(batch)
            ids.extend(str(i) for i in batch.ids)
            cursors.append(cursor)
    return ids, cursors


# -- reading ------------------------------------------------------------------------------------------
def test_describe_reports_dimension_distance_and_count(store: StoreCase) -> None:
    with _open(store) as conn:
        info = conn.describe()
    assert (info.dim, info.distance, info.count) == (store.dim, store.distance, len(store.points))
    assert info.name == store.collection
    json.dumps(info.as_dict())  # recorded in the ledger as JSON


@pytest.mark.parametrize("batch_size", [7, 64, 257, 1000])  # 257 = the count: the last page is full
def test_pagination_yields_every_point_exactly_once(store: StoreCase, batch_size: int) -> None:
    ids, cursors = _read_all(store, batch_size)
    assert not [pid for pid, n in Counter(ids).items() if n > 1]
    assert set(ids) == set(store.points)
    assert cursors[-1] is None and None not in cursors[:-1]
    assert len(cursors) == -(-len(store.points) // batch_size)


def test_resume_from_a_cursor_reads_the_rest_once(store: StoreCase) -> None:
    with _open(store) as conn:
        pages = conn.iter_batches(batch_size=50)
        first, _ = next(pages)
        second, cursor = next(pages)
        head = [str(i) for i in [*first.ids, *second.ids]]
    saved = cursor_to_json(cursor)  # the ledger keeps the cursor as JSON between runs
    assert saved is not None
    with _open(store) as conn:
        tail = [str(i) for batch, _ in conn.iter_batches(batch_size=64, start=cursor_from_json(saved))
                for i in batch.ids]
    assert not set(head) & set(tail)
    assert sorted(head + tail) == sorted(store.points)


def test_fetch_and_scan_return_the_stored_vectors_bit_exactly(store: StoreCase) -> None:
    stored = store.snapshot()
    with _open(store) as conn:
        scanned = {str(i): np.asarray(v, dtype=np.float32).tobytes()
                   for batch, _ in conn.iter_batches(batch_size=100) for i, v in zip(batch.ids, batch.vectors,
                                                                                      strict=True)}
        some_ids = [batch.ids for batch, _ in conn.iter_batches(batch_size=13)][3]  # ids in the store's own type
        fetched = conn.fetch(some_ids)
        absent = conn.fetch([some_ids[0], 999_999_999])
    assert scanned == {pid: stored[pid][0] for pid in store.points}
    assert sorted(str(p.id) for p in fetched) == sorted(str(i) for i in some_ids)
    for point in fetched:
        assert np.asarray(point.vectors[""] if "" in point.vectors else next(iter(point.vectors.values())),
                          dtype=np.float32).tobytes() == stored[str(point.id)][0]
        assert point.payload
    assert [str(p.id) for p in absent] == [str(some_ids[0])]


def test_text_and_tenant_resolve_through_the_field_map(store: StoreCase) -> None:
    seen = 0
    with _open(store) as conn:
        info = conn.describe()
        for page, _ in conn.iter_batches(batch_size=100):
            batch = resolve_batch(page, store.field_map, info.dim)
            assert batch.dim_ok.all()
            for pid, text, tenant in zip(batch.ids, batch.texts, batch.tenants, strict=True):
                assert (text, tenant) == store.points[str(pid)]
                seen += 1
    assert seen == len(store.points)


def test_a_full_scan_leaves_the_store_unchanged(store: StoreCase, tmp_path: Path) -> None:
    before = store.snapshot()
    result = run_scan(store.uri, f"sqlite:///{tmp_path / 'ledger.db'}", collection=store.collection,
                      detectors=["integrity"], field_map=store.field_map)
    assert result.status == "completed", result.error
    assert result.points_scanned == len(store.points)
    assert store.snapshot() == before


# -- quarantine -----------------------------------------------------------------------------------------
# The real state machine (auditor.quarantine: backup in the ledger, write, read back, release) against every
# store. Expected modes per store; a store outside its modes must refuse cleanly and stay unchanged.
FLAG = "vecaudit_quarantine"
TARGET = "docs__quarantine"
MODES = {
    "qdrant": {"tag", "move"}, "chroma": {"tag", "move"}, "chroma-http": {"tag", "move"}, "milvus": {"tag", "move"},
    "pgvector": {"move"},  # tag needs a JSONB payload column; the contract table has plain columns
    "lancedb": {"move"}, "parquet": set(), "jsonl": set(), "npz": set(),
}
# Chroma rounds the vectors of a cosine collection on every write (measured: up to 2 ulp of float32); a point
# moved out and back equals its original to that tolerance (the ledger backup keeps the exact bits).
ROUNDING_ON_WRITE = {"chroma", "chroma-http"}


def _first_vector_values(point: StoredPoint) -> list[float]:
    return list(point.vectors[""] if "" in point.vectors else next(iter(point.vectors.values())))


def _first_vector(point: StoredPoint) -> bytes:
    return np.asarray(_first_vector_values(point), dtype=np.float32).tobytes()


def _scanned_item(store: StoreCase, ledger: Ledger, ledger_url: str, mode: str) -> PlanItem:
    """Scan the store into a fresh ledger (fingerprints of every point), then plan one point in ``mode``."""
    result = run_scan(store.uri, ledger_url, collection=store.collection, detectors=["integrity"],
                      field_map=store.field_map)
    assert result.status == "completed", result.error
    with _open(store) as conn:
        pid = next(iter(conn.iter_batches(batch_size=20)))[0].ids[7]  # the store's own id type
    with ledger.session() as s:
        coll = s.scalars(select(CollectionRow)).one()
        return PlanItem(collection_id=coll.id, collection=coll.name, source=coll.source, point_key=point_key(pid),
                        point_id=pid, finding_ids=[], rule_ids=[], statuses=[], mode=mode,
                        target=TARGET if mode == "move" else None, flag_field=FLAG,
                        last_scan_id=result.scan_id)


def _assert_restored(store: StoreCase, before: Snapshot, pid: str, mode: str) -> None:
    after = store.snapshot()
    after.pop("__writes__", None)  # pgvector's write counters: they count the quarantine, by design
    before = {k: v for k, v in before.items() if k != "__writes__"}
    assert after.keys() == before.keys()
    assert {k: v for k, v in after.items() if k != pid} == {k: v for k, v in before.items() if k != pid}
    assert after[pid][1] == before[pid][1]  # payload, text and tenant included
    if mode == "move" and store.name in ROUNDING_ON_WRITE:
        np.testing.assert_array_max_ulp(np.frombuffer(after[pid][0], np.float32),
                                        np.frombuffer(before[pid][0], np.float32), maxulp=2)
    else:
        assert after[pid][0] == before[pid][0]


@pytest.mark.parametrize("mode", ["tag", "move"])
def test_quarantine_restores_the_original_point_or_refuses_cleanly(store: StoreCase, mode: str, tmp_path: Path) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(ledger_url).open()
    try:
        item = _scanned_item(store, ledger, ledger_url, mode)
        if mode in MODES[store.name]:
            _round_trip(store, ledger, item, mode)
        else:
            _refusal(store, ledger, item, mode)
    finally:
        ledger.dispose()


def _round_trip(store: StoreCase, ledger: Ledger, item: PlanItem, mode: str) -> None:
    """Apply, check the store holds the quarantined state, release, check the original point is back."""
    pid = str(item.point_id)
    before = store.snapshot()
    runner = Quarantine(ledger, actor="contract")
    [applied] = runner.apply([item])
    assert (applied.state, applied.ok) == ("applied", True), applied.message

    with _open(store) as conn:
        live = conn.fetch([item.point_id])
        copy = conn.fetch_points([item.point_id], collection=TARGET) if mode == "move" else []
    if mode == "tag":
        assert [str(p.id) for p in live] == [pid] and FLAG in live[0].payload
        assert live[0].payload[FLAG]["action_id"] == applied.action_id
        assert _first_vector(live[0]) == before[pid][0]  # a payload write leaves the vector alone
        assert store.snapshot().keys() == before.keys()
    else:
        assert live == [] and [str(p.id) for p in copy] == [pid] and FLAG in copy[0].payload
        assert pid not in store.snapshot()

    [released] = runner.release([applied.action_id or 0])
    assert (released.state, released.ok) == ("released", True), released.message
    _assert_restored(store, before, pid, mode)
    with _open(store) as conn:
        info = conn.describe()
        [point] = conn.fetch([item.point_id])
        assert type(point.id) is type(item.point_id)
        batch = resolve_batch(PointBatch([point.id], [np.asarray(_first_vector_values(point))], [point.payload]),
                              store.field_map, info.dim)
        assert (batch.texts[0], batch.tenants[0]) == store.points[pid]
        if mode == "move":
            assert conn.fetch_points([item.point_id], collection=TARGET) == []


def _refusal(store: StoreCase, ledger: Ledger, item: PlanItem, mode: str) -> None:
    """A mode the store cannot do: one clear error (or a failed outcome saying why), the store unchanged."""
    before = store.snapshot()
    runner = Quarantine(ledger, actor="contract")
    try:
        outcomes = runner.apply([item])
    except QuarantineError as e:  # refused up front: the connector does not declare the mode
        assert f"cannot quarantine in {mode} mode" in str(e)
        assert "move" in str(e) if MODES[store.name] else "read-only" in str(e)
    else:  # declared, refused by the store before any write (pgvector tag without a JSONB column)
        [outcome] = outcomes
        assert (outcome.state, outcome.ok) == ("failed", False)
        assert "tag mode is unsupported" in outcome.message and "nothing applied" in outcome.message
    assert store.snapshot() == before
    if not MODES[store.name]:  # read-only exports: every write method refuses with one clear error
        with _open(store) as conn:
            with pytest.raises(ConnectorError, match="read-only export"):
                conn.set_payload([item.point_id], {FLAG: True})
            with pytest.raises(ConnectorError, match="read-only export"):
                conn.ensure_collection_like(TARGET)
