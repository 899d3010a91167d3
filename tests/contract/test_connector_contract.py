"""The connector contract, run unchanged against every connector on its real engine: complete pagination,
resumable cursors, describe(), bit-exact fetch, field-map resolution and read-only scans."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from connector_stores import StoreCase
from support import run_scan

from auditor.batching import resolve_batch
from auditor.connector import Connector, cursor_from_json, cursor_to_json
from auditor.registry import connector_for


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
# Quarantine writes (tag / move / release restoring the original point) join the Connector contract with the
# quarantine design; their contract checks go here, run over the same `store` parameter, for each connector
# whose `capabilities` name the mode.
