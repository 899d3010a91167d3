"""End-to-end: a real Qdrant local store of real text embedded by the real model, scanned into a ledger."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import load_jsonl
from support import build_qdrant_store, read_collection, run_scan

from auditor.types import FieldMap


@pytest.fixture(scope="module")
def wiki(embed):  # type: ignore[no-untyped-def]
    rows = load_jsonl("wikipedia_en.jsonl")[:120]
    return rows, embed([r["text"] for r in rows])


def test_planted_integrity_faults_are_reported(tmp_path: Path, wiki, sqlite_ledger_url: str) -> None:  # type: ignore[no-untyped-def]
    rows, vecs = wiki
    vecs = vecs.copy()
    payloads = [{"text": r["text"], "tenant": "acme", "doc_id": r["id"]} for r in rows]
    vecs[3] = np.nan
    vecs[4] = 0.0
    vecs[5] = vecs[5] * 7.0  # another model's scale
    vecs[7] = vecs[8]  # copied vector, different text
    payloads[9] = {"tenant": "acme"}  # no text field
    payloads[10] = {"text": "", "tenant": "acme"}
    payloads[11] = {"text": rows[12]["text"] + " (edited)", "tenant": "acme", "doc_id": rows[12]["id"]}
    del payloads[13]["tenant"]
    uri = build_qdrant_store(tmp_path / "store", vecs, payloads, distance="dot", validate=False)
    before = read_collection(uri)
    result = run_scan(
        uri,
        sqlite_ledger_url,
        detectors=["integrity", "provenance"],
        field_map=FieldMap(text="text", tenant="tenant", doc_id="doc_id"),
    )
    assert result.status == "completed"
    got = {(r.finding.rule_id, r.finding.point_id) for r in result.findings}
    expected = {
        ("VA101", 3),
        ("VA102", 4),
        ("VA104", 5),
        ("VA105", 7),
        ("VA105", 8),
        ("VA107", 9),
        ("VA109", 10),
        ("VA106", 11),
        ("VA106", 12),
        ("VA108", 13),
    }
    assert expected <= got
    # nothing else on clean points: every finding is one we planted
    assert {pid for _, pid in got} <= {3, 4, 5, 7, 8, 9, 10, 11, 12, 13}
    assert result.exit_code() == 1
    assert read_collection(uri) == before  # scans are read-only


def test_second_scan_reports_tampered_and_stale_points(tmp_path: Path, wiki, sqlite_ledger_url: str) -> None:  # type: ignore[no-untyped-def]
    from qdrant_client import QdrantClient, models

    rows, vecs = wiki
    payloads = [{"text": r["text"], "tenant": "acme"} for r in rows[:60]]
    uri = build_qdrant_store(tmp_path / "store", vecs[:60], payloads)
    first = run_scan(uri, sqlite_ledger_url, detectors=["integrity", "provenance"])
    assert first.counts["baseline"] is True and first.counts["new"] == 60
    assert not [r for r in first.findings if r.finding.detector == "provenance"]

    client = QdrantClient(path=uri.removeprefix("qdrant+local://"))
    client.update_vectors("docs", points=[models.PointVectors(id=2, vector=vecs[50].tolist())])  # tampered: text kept
    client.set_payload("docs", payload={"text": "Rewritten text, vector kept."}, points=[4])  # stale
    client.delete("docs", points_selector=[6])
    client.upsert(
        "docs",
        points=[models.PointStruct(id=1000, vector=vecs[59].tolist(), payload={"text": "new", "tenant": "acme"})],
    )
    client.close()

    second = run_scan(uri, sqlite_ledger_url, detectors=["integrity", "provenance"])
    got = {(r.finding.rule_id, r.finding.point_id) for r in second.findings if r.finding.detector == "provenance"}
    assert got == {("VA201", 2), ("VA202", 4)}
    assert (second.counts["new"], second.counts["deleted"], second.counts["changed"]) == (1, 1, 2)
    assert second.exit_code() == 1


def test_a_crashing_detector_makes_the_scan_partial_but_keeps_the_others(
    tmp_path: Path, wiki, sqlite_ledger_url: str  # type: ignore[no-untyped-def]
) -> None:
    from auditor.engine import Scanner, ScanOptions
    from auditor.ledger import Ledger
    from auditor.registry import connector_for
    from detectors.integrity import IntegrityDetector
    from detectors.provenance import ProvenanceDetector

    class BrokenProvenance(ProvenanceDetector):
        def finish(self, ctx):  # type: ignore[no-untyped-def]
            raise IndexError("boom")

    rows, vecs = wiki
    vecs = vecs[:30].copy()
    vecs[2] = 0.0
    uri = build_qdrant_store(tmp_path / "store", vecs, [{"text": r["text"], "tenant": "a"} for r in rows[:30]])
    ledger = Ledger(sqlite_ledger_url).open()
    with connector_for(uri, collection="docs") as conn:
        opts = ScanOptions(field_map=FieldMap(text="text", tenant="tenant"), show_progress=False)
        result = Scanner(ledger, conn, [IntegrityDetector(), BrokenProvenance()], opts).run()
    assert result.status == "partial" and result.exit_code() == 3
    assert any("provenance failed: IndexError: boom" in n for n in result.notes)
    assert ("VA102", 2) in {(r.finding.rule_id, r.finding.point_id) for r in result.findings}
