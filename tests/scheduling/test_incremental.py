"""`scan --incremental` gives the findings of a full scan: two ledgers with the same history, one scanned
incrementally and one fully after real changes to a real store, must agree finding for finding."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import load_jsonl
from support import build_qdrant_store

from auditor.context import ScanSettings
from auditor.detector import Detector
from auditor.engine import Scanner, ScanOptions, ScanResult
from auditor.ledger import Ledger
from auditor.ledger import repository as repo
from auditor.registry import connector_for
from auditor.types import FieldMap, RecordBatch
from detectors.integrity import IntegrityDetector
from detectors.provenance import ProvenanceDetector
from detectors.secrets import SecretsDetector
from detectors.tenant_markers import TenantMarkerDetector

MARKERS = {
    "acme": {"names": ["Acme Corp"], "canaries": ["ACME-CANARY-7731"]},
    "globex": {"names": ["Globex Industries"]},
}


class CountingMarkerDetector(TenantMarkerDetector):
    """The real (pointwise) tenant-marker detector, counting the points its observe is shown."""

    def begin(self, ctx: Any) -> None:
        super().begin(ctx)
        self.observed = 0

    def observe(self, batch: RecordBatch, ctx: Any) -> Any:
        self.observed += len(batch)
        return super().observe(batch, ctx)


def _detectors() -> list[Detector]:
    return [CountingMarkerDetector(), IntegrityDetector(), ProvenanceDetector(), SecretsDetector()]


def _scan(uri: str, ledger_url: str, *, incremental: bool) -> tuple[ScanResult, list[Detector]]:
    dets = _detectors()
    ledger = Ledger(ledger_url).open()
    connector = connector_for(uri, collection="docs")
    try:
        opts = ScanOptions(
            field_map=FieldMap(text="text", tenant="tenant"),
            settings=ScanSettings(extra={"tenant_markers": MARKERS}),
            show_progress=False,
            batch_size=64,
            incremental=incremental,
        )
        return Scanner(ledger, connector, dets, opts).run(), dets
    finally:
        connector.close()
        ledger.dispose()


def _signature(result: ScanResult) -> set[tuple[Any, ...]]:
    return {
        (r.fingerprint, r.finding.rule_id, r.finding.point_id, round(r.finding.score, 6), r.finding.message, r.status)
        for r in result.findings
    }


def _statuses(ledger_url: str) -> dict[str, str]:
    ledger = Ledger(ledger_url).open()
    try:
        with ledger.session() as s:
            return {row.fingerprint: row.status for row in repo.query_findings(s, repo.FindingFilter())}
    finally:
        ledger.dispose()


def _change_store(uri: str, vecs: Any, extra: list[str], retext: dict[int, str]) -> None:
    """Re-text some points, swap point 30's vector for 31's, delete point 40, add point 1000 (globex)."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=uri.removeprefix("qdrant+local://"))
    for point, text in retext.items():
        client.set_payload("docs", payload={"text": text}, points=[point])
    client.update_vectors("docs", points=[models.PointVectors(id=30, vector=vecs[31].tolist())])
    client.delete("docs", points_selector=[40])
    new = models.PointStruct(id=1000, vector=vecs[-2].tolist(), payload={"text": extra[1], "tenant": "globex"})
    client.upsert("docs", points=[new])
    client.close()


@pytest.fixture(scope="module")
def corpus(embed):  # type: ignore[no-untyped-def]
    rows = load_jsonl("wikipedia_en.jsonl")[:150]
    texts = [r["text"] for r in rows]
    texts[5] += " Our partner Acme Corp confirmed the figures."
    texts[7] += " Reference ACME-CANARY-7731 for the audit."
    texts[10] += " Supplied by Globex Industries."
    texts[12] += " aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY9"
    extra = [
        "Quarterly notes mention Acme Corp twice.",
        "The canary ACME-CANARY-7731 appeared in a shared folder.",
        "Nothing special in this replacement paragraph about rivers and lakes.",
    ]
    return texts, embed(texts + extra), extra


def test_incremental_scan_equals_full_scan(tmp_path: Path, corpus) -> None:  # type: ignore[no-untyped-def]
    texts, vecs, extra = corpus
    n = len(texts)
    payloads = [{"text": t, "tenant": "acme" if i % 2 == 0 else "globex"} for i, t in enumerate(texts)]
    uri = build_qdrant_store(tmp_path / "store", vecs[:n], payloads)
    full_ledger = f"sqlite:///{tmp_path / 'full.db'}"
    inc_ledger = f"sqlite:///{tmp_path / 'inc.db'}"
    first, _ = _scan(uri, full_ledger, incremental=False)
    assert first.status == "completed"
    planted = {("VA433", 5), ("VA431", 7), ("VA433", 10)}
    assert planted <= {(r.finding.rule_id, r.finding.point_id) for r in first.findings}
    shutil.copy(tmp_path / "full.db", tmp_path / "inc.db")  # the same history in both ledgers

    _change_store(uri, vecs, extra, {5: extra[2], 21: texts[21] + " " + extra[0]})  # 5: marker gone, 21: new one
    changed_points = 4  # 5, 21, 30 changed; 1000 new

    for round_no in (1, 2):  # the second round has no changes: carried findings are carried again
        inc, inc_dets = _scan(uri, inc_ledger, incremental=True)
        full, full_dets = _scan(uri, full_ledger, incremental=False)
        assert inc.status == full.status == "completed"
        assert _signature(inc) == _signature(full)
        assert {(r.fingerprint, r.is_new) for r in inc.findings} == {(r.fingerprint, r.is_new) for r in full.findings}
        assert _statuses(inc_ledger) == _statuses(full_ledger)
        marker_inc, marker_full = inc_dets[0], full_dets[0]
        assert isinstance(marker_inc, CountingMarkerDetector) and isinstance(marker_full, CountingMarkerDetector)
        assert marker_full.observed == n  # 150 - 1 deleted + 1 new
        assert marker_inc.observed == (changed_points if round_no == 1 else 0)
        touched = {5, 21, 30, 1000} if round_no == 1 else set()
        unchanged_pointwise_findings = [
            r for r in full.findings
            if r.finding.detector in ("tenant-marker", "secrets") and r.finding.point_id not in touched
        ]
        assert len(unchanged_pointwise_findings) >= 3  # at least VA431 on 7, VA433 on 10, the key on 12
        assert inc.counts["carried"] == len(unchanged_pointwise_findings)
        assert any(note.startswith("incremental: pass 1 of secrets, tenant-marker") for note in inc.notes)
        assert any(note.startswith("secrets: 1 findings on 1 points") for note in inc.notes)  # carried are counted
        if round_no == 1:
            assert ("VA201", 30) in {(r.finding.rule_id, r.finding.point_id) for r in inc.findings}

    got = {(r.finding.rule_id, r.finding.point_id) for r in inc.findings}
    assert {("VA431", 7), ("VA433", 10), ("VA433", 21), ("VA431", 1000)} <= got
    assert ("VA433", 5) not in got


def test_changed_detector_parameters_fall_back_to_a_full_pass(tmp_path: Path, corpus) -> None:  # type: ignore[no-untyped-def]
    texts, vecs, _ = corpus
    payloads = [{"text": t, "tenant": "acme" if i % 2 == 0 else "globex"} for i, t in enumerate(texts[:40])]
    uri = build_qdrant_store(tmp_path / "store", vecs[:40], payloads)
    ledger_url = f"sqlite:///{tmp_path / 'l.db'}"
    _scan(uri, ledger_url, incremental=True)  # no previous scan: a full scan, said so
    ledger = Ledger(ledger_url).open()
    connector = connector_for(uri, collection="docs")
    marker = CountingMarkerDetector(max_evidence=3)  # other parameters than the last scan
    opts = ScanOptions(
        field_map=FieldMap(text="text", tenant="tenant"),
        settings=ScanSettings(extra={"tenant_markers": MARKERS}),
        show_progress=False,
        incremental=True,
    )
    try:
        result = Scanner(ledger, connector, [marker], opts).run()
    finally:
        connector.close()
        ledger.dispose()
    assert marker.observed == 40
    assert result.counts["carried"] == 0


def test_incremental_pass_two_reuses_graphs_and_reembeddings(tmp_path: Path, corpus) -> None:  # type: ignore[no-untyped-def]
    """Every default detector, real text and model: the incremental scan patches the neighbour graphs (the
    collection's and each tenant's) and re-embeds only the new or re-texted points, with the findings of a full
    scan."""
    from auditor.embedder import clear_encoding_cache
    from auditor.registry import detector_classes

    texts, vecs, extra = corpus
    n = len(texts)
    payloads = [{"text": t, "tenant": "acme" if i % 2 == 0 else "globex"} for i, t in enumerate(texts)]
    uri = build_qdrant_store(tmp_path / "store", vecs[:n], payloads)
    state_dir = tmp_path / "state"
    classes = detector_classes()

    def scan(ledger_url: str, *, incremental: bool) -> ScanResult:
        dets = [cls() for cls in classes.values() if cls.enabled_by_default]
        ledger = Ledger(ledger_url).open()
        connector = connector_for(uri, collection="docs")
        opts = ScanOptions(
            field_map=FieldMap(text="text", tenant="tenant"),
            settings=ScanSettings(extra={"tenant_markers": MARKERS}),
            show_progress=False,
            incremental=incremental,
            state_dir=str(state_dir),
        )
        try:
            return Scanner(ledger, connector, dets, opts).run()
        finally:
            connector.close()
            ledger.dispose()

    full_ledger = f"sqlite:///{tmp_path / 'full.db'}"
    # encodings cached by earlier tests came from other batches (other padding, last digits differ): start clean
    clear_encoding_cache()
    first = scan(full_ledger, incremental=True)  # no earlier scan: a full scan that leaves its state
    assert first.status == "completed"
    assert (state_dir).is_dir() and any(state_dir.rglob("graph-*.npz"))
    shutil.copy(tmp_path / "full.db", tmp_path / "inc.db")

    _change_store(uri, vecs, extra, {5: extra[2]})  # re-texted: its vector now mismatches

    clear_encoding_cache()  # what the incremental scan does not re-embed must come from the kept state
    inc = scan(f"sqlite:///{tmp_path / 'inc.db'}", incremental=True)
    full = scan(full_ledger, incremental=False)
    assert inc.status == full.status == "completed"
    assert _signature(inc) == _signature(full)
    got = {(r.finding.rule_id, r.finding.point_id) for r in inc.findings}
    assert {("VA501", 5), ("VA501", 30)} <= got  # the tamper detector still sees the changed points
    notes = "\n".join(inc.notes)
    assert "neighbour graph 'all' patched" in notes
    assert "neighbour graph 'sub:tenant:acme' patched" in notes
    # two texts are new to the state (point 5's and point 1000's); the other 148 come from it
    assert "148 re-embeddings reused, 2 texts encoded" in notes, notes
    assert "patched" not in "\n".join(full.notes)
