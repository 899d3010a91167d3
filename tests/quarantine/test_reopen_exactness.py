"""Move and release on a Cosine collection are bit-exact as a new client reads the store, for vectors that are and
are not fixed points of normalisation (built so on any CPU); where a store does alter a vector, the outcome names
exactly that point. Nothing here depends on how this CPU rounds a norm."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from quarantine_support import (
    DOC_ID_CLASH,
    HIJACKED_VECTOR,
    NO_TENANT,
    POISONS,
    QUARANTINE,
    assert_quarantined,
    assert_restored,
    case,
    case_template,
    fixed_point_vector,
    moved_point_vector,
    snapshot,
)

from auditor.connector import SourceURI
from auditor.ledger import Ledger
from auditor.quarantine import Quarantine, Selection, list_actions, plan
from auditor.types import StoredPoint
from connectors.qdrant import QdrantConnector

__all__ = ["case", "case_template"]  # fixtures


def quarantine_all(case: Any, runner: Quarantine, ledger: Ledger) -> list[Any]:
    outcomes = runner.apply(plan(ledger, Selection(finding_ids=list(case.confirmed.values())), mode="move"))
    assert [(o.state, o.notes) for o in outcomes] == [("applied", [])] * 3, outcomes
    return outcomes


def test_local_mode_keeps_written_vectors_once_reopened_and_the_quarantine_collection_is_dot(case: Any) -> None:
    """The store holds what was written (the norm-5 vector too), so the backup is the written vector; the move
    target is a Dot collection, which no store normalises."""
    dim = len(case.original["docs"][0][0][""]) // 4
    assert case.original["docs"][DOC_ID_CLASH][0][""] == moved_point_vector(dim, DOC_ID_CLASH).tobytes()
    assert case.original["docs"][NO_TENANT][0][""] == fixed_point_vector(dim, NO_TENANT).tobytes()
    ledger = Ledger(case.ledger_url).open()
    quarantine_all(case, Quarantine(ledger, actor="alice"), ledger)
    assert_quarantined(case.uri, case.original, POISONS, "move")
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(case.path))
    try:
        params: Any = client.get_collection(QUARANTINE).config.params.vectors
        assert params.distance == models.Distance.DOT
    finally:
        client.close()
    ledger.dispose()


def test_local_mode_normalises_only_its_in_memory_copy(case: Any) -> None:
    """Why release is verified by a new client: the writing client reads a Cosine vector back normalised, while
    the folder holds the written bits (qdrant-client local mode, any CPU: a norm-5 vector cannot read back)."""
    written = moved_point_vector(len(case.original["docs"][0][0][""]) // 4, DOC_ID_CLASH)
    point = StoredPoint(DOC_ID_CLASH, {"": written.tolist()}, case.original["docs"][DOC_ID_CLASH][1])
    conn = QdrantConnector(SourceURI.parse(case.uri), collection="docs")
    try:
        conn.upsert_points([point])
        (in_process,) = conn.fetch([DOC_ID_CLASH])
        assert np.asarray(in_process.vectors[""], dtype=np.float32).tobytes() != written.tobytes()
        conn.close()
        (reopened,) = conn.fetch([DOC_ID_CLASH])
        assert np.asarray(reopened.vectors[""], dtype=np.float32).tobytes() == written.tobytes()
    finally:
        conn.close()


def test_release_into_cosine_is_bit_exact_after_reopening_with_no_note(case: Any) -> None:
    ledger = Ledger(case.ledger_url).open()
    runner = Quarantine(ledger, actor="alice")
    applied = quarantine_all(case, runner, ledger)
    released = runner.release([o.action_id for o in applied])
    assert [(o.state, o.notes) for o in released] == [("released", [])] * 3, released
    assert_restored(case.uri, case.original)
    assert all(a.error is None for a in list_actions(ledger))
    ledger.dispose()


def test_an_existing_cosine_quarantine_collection_keeps_working(case: Any) -> None:
    """A quarantine collection created by an earlier version (Cosine, like its source) is used as it is."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(case.path))
    try:
        source: Any = client.get_collection("docs").config.params.vectors
        size = source.size
        client.create_collection(QUARANTINE, vectors_config=models.VectorParams(size=size,
                                                                                distance=models.Distance.COSINE))
    finally:
        client.close()
    ledger = Ledger(case.ledger_url).open()
    runner = Quarantine(ledger, actor="alice")
    applied = quarantine_all(case, runner, ledger)  # no note: the folder holds the copies' written bits
    assert_quarantined(case.uri, case.original, POISONS, "move")
    assert all(o.notes == [] for o in runner.release([o.action_id for o in applied]))
    assert_restored(case.uri, case.original)
    ledger.dispose()


class NormalisingStore(QdrantConnector):
    """A store that normalises what is written to the live Cosine collection and keeps the normalised bits, as a
    Qdrant server or a Chroma cosine collection does (here numpy's float32 v/|v|, whatever it gives)."""

    def upsert_points(self, points: Sequence[StoredPoint], *, collection: str | None = None) -> None:
        if collection in (None, self.collection):
            points = [
                StoredPoint(p.id, {k: _normalised(v) for k, v in p.vectors.items()}, p.payload) for p in points
            ]
        super().upsert_points(points, collection=collection)


def _normalised(values: Any) -> list[float]:
    v = np.asarray(values, dtype=np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32).tolist()


def test_a_store_that_alters_restored_vectors_is_named_point_by_point_and_keeps_the_backup(case: Any) -> None:
    ledger = Ledger(case.ledger_url).open()
    runner = Quarantine(ledger, actor="alice",
                        connector_factory=lambda c: NormalisingStore(SourceURI.parse(case.uri), collection=c.name))
    applied = quarantine_all(case, runner, ledger)  # the Dot quarantine collection is written as is
    released = runner.release([o.action_id for o in applied], purge_backup=True)
    assert [o.state for o in released] == ["released"] * 3
    now = snapshot(case.uri)["docs"]
    altered = {pid for pid in POISONS if now[pid][0] != case.original["docs"][pid][0]}
    assert DOC_ID_CLASH in altered and NO_TENANT not in altered  # norm 5 cannot survive; a fixed point must
    assert HIJACKED_VECTOR in altered or now[HIJACKED_VECTOR] == case.original["docs"][HIJACKED_VECTOR]
    named = {o.point_id for o in released if any("ulp off" in n for n in o.notes)}
    assert named == altered
    rows = {a.point_key: a for a in list_actions(ledger)}
    for pid in POISONS:
        backup = rows[str(pid)].backup or {}
        if pid in altered:
            assert "f32le" in str(backup) and "ulp off" in (rows[str(pid)].error or "")  # the exact copy stays
            assert any("backup kept" in n for o in released if o.point_id == pid for n in o.notes)
        else:
            assert "purged" in backup and rows[str(pid)].error is None
    (note,) = [n for o in released if o.point_id == DOC_ID_CLASH for n in o.notes if "ulp off" in n]
    assert note.startswith(f"point {DOC_ID_CLASH}: vector up to ") and "after reopening the store" in note
    ledger.dispose()
