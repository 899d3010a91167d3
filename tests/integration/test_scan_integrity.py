"""End-to-end: a real Qdrant local store of real text embedded by the real model, scanned into a ledger."""

from __future__ import annotations

import json
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


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"file://{path}"


def test_a_lone_surrogate_in_any_field_is_flagged_and_the_scan_completes(
    tmp_path: Path, wiki, sqlite_ledger_url: str  # type: ignore[no-untyped-def]
) -> None:
    """One ``\\ud800`` in a field nobody audits used to fail the whole scan (UnicodeEncodeError, 0 points)."""
    rows, vecs = wiki
    payloads = [{"text": r["text"], "tenant": "acme", "source": {"tags": ["wiki"]}} for r in rows[:40]]
    payloads[3]["source"] = {"tags": ["wiki", "x\ud800y"]}  # nested, not the text field
    payloads[5]["text"] = rows[5]["text"] + "\udc80"
    payloads[6]["bad\udfffkey"] = 1
    payloads[8]["tenant"] = "acme\x00"  # NUL: refused by PostgreSQL text columns
    uri = build_qdrant_store(tmp_path / "store", vecs[:40], payloads)
    before = read_collection(uri)
    result = run_scan(uri, sqlite_ledger_url)  # every default detector
    assert result.status == "completed" and result.points_scanned == 40, result.error
    flagged = {r.finding.point_id: r.finding for r in result.findings if r.finding.rule_id == "VA110"}
    assert set(flagged) == {3, 5, 6, 8}
    assert flagged[3].evidence["fields"] == ["source.tags[1]"] and flagged[3].evidence["characters"] == ["\\ud800"]
    assert flagged[5].evidence["fields"] == ["text"] and "source.tags[1]" in flagged[3].message
    assert flagged[6].evidence["fields"] == ["bad\\udfffkey (key)"]
    assert flagged[8].evidence["characters"] == ["\\u0000"] and flagged[8].tenant == "acme\\u0000"
    assert all(r.finding.effective_severity.value == "medium" for r in result.findings if r.finding.rule_id == "VA110")
    assert result.exit_code() in (0, 1)
    assert read_collection(uri) == before


def test_duplicate_ids_are_one_finding_and_an_unchanged_export_is_unchanged_on_rescan(
    tmp_path: Path, wiki, sqlite_ledger_url: str  # type: ignore[no-untyped-def]
) -> None:
    rows, vecs = wiki
    export = [{"id": i, "vector": vecs[i].tolist(), "text": rows[i]["text"]} for i in range(30)]
    export.append({"id": 3, "vector": vecs[40].tolist(), "text": rows[3]["text"]})  # same text, another vector
    export.append(dict(export[7]))  # an identical copy
    uri = _write_jsonl(tmp_path / "dump.jsonl", export)
    fm = FieldMap(text="text")
    first = run_scan(uri, sqlite_ledger_url, collection="dump", detectors=["integrity", "provenance"], field_map=fm)
    second = run_scan(uri, sqlite_ledger_url, collection="dump", detectors=["integrity", "provenance"], field_map=fm)
    for result in (first, second):
        dup = {r.finding.point_id: r.finding for r in result.findings if r.finding.rule_id == "VA111"}
        assert set(dup) == {3, 7}
        assert dup[3].effective_severity.value == "medium" and dup[3].evidence["rows"] == [3, 30]
        assert dup[7].effective_severity.value == "low"
        assert not [r for r in result.findings if r.finding.rule_id == "VA105"]  # copies of one id: not "several ids"
    assert not [r for r in second.findings if r.finding.detector == "provenance"]
    assert (second.counts["new"], second.counts["changed"], second.counts["deleted"]) == (0, 0, 0)
    # the copy removed: the id has one state again, compared with nothing stale; a real tamper is still caught
    export.pop(30)
    export[12]["vector"] = vecs[50].tolist()
    _write_jsonl(tmp_path / "dump.jsonl", export)
    third = run_scan(uri, sqlite_ledger_url, collection="dump", detectors=["integrity", "provenance"], field_map=fm)
    assert {(r.finding.rule_id, r.finding.point_id) for r in third.findings if r.finding.detector == "provenance"} == {
        ("VA201", 12)
    }


@pytest.mark.parametrize(("field", "rule", "option"), [("text", "VA107", "--text-field"),
                                                      ("tenant", "VA108", "--tenant-field")])
def test_a_field_missing_everywhere_is_one_collection_finding(
    field: str, rule: str, option: str, tmp_path: Path, wiki, sqlite_ledger_url: str  # type: ignore[no-untyped-def]
) -> None:
    """A mistyped --text-field / --tenant-field used to raise one finding per point (VA108: HIGH); now one
    collection-level finding names the keys that exist and the flag to check."""
    rows, vecs = wiki
    fields = FieldMap(text="text", tenant="tenant")
    payloads = [{"text": r["text"], "tenant": "acme"} for r in rows[:30]]
    for p in payloads:
        p["mislabelled"] = p.pop(field)
    result = run_scan(build_qdrant_store(tmp_path / "store", vecs[:30], payloads), sqlite_ledger_url,
                      detectors=["integrity"], field_map=fields)
    missing = [r.finding for r in result.findings if r.finding.rule_id == rule]
    assert len(missing) == 1 and missing[0].point_id is None
    assert option in missing[0].message and "mislabelled (30)" in missing[0].message
    assert "mislabelled (30)" in missing[0].evidence["payload_keys"]
    # one point without it among many that have it is still reported on its own
    for p in payloads:
        p[field] = p.pop("mislabelled")
    del payloads[4][field]
    result = run_scan(build_qdrant_store(tmp_path / "store2", vecs[:30], payloads), sqlite_ledger_url,
                      detectors=["integrity"], field_map=fields)
    assert [r.finding.point_id for r in result.findings if r.finding.rule_id == rule] == [4]


def test_an_odd_first_row_does_not_set_the_dimension_of_an_export(
    tmp_path: Path, wiki, sqlite_ledger_url: str  # type: ignore[no-untyped-def]
) -> None:
    """A 128-d first row in a 384-d JSONL used to flag every other row (VA103), blind the graph detectors and
    raise a false model mismatch (VA502)."""
    rows, vecs = wiki
    export = [{"id": i, "vector": vecs[i].tolist(), "text": rows[i]["text"]} for i in range(100)]
    export[0]["vector"] = vecs[0][:128].tolist()
    uri = _write_jsonl(tmp_path / "dump.jsonl", export)
    result = run_scan(uri, sqlite_ledger_url, collection="dump", field_map=FieldMap(text="text"),
                      detectors=["integrity", "vector-text-mismatch", "outlier"])
    assert result.status == "completed", result.error
    wrong = [r.finding for r in result.findings if r.finding.rule_id == "VA103"]
    assert [(f.point_id, f.evidence["stored_dim"], f.evidence["dim"]) for f in wrong] == [(0, 128, 384)]
    assert not [r for r in result.findings if r.finding.rule_id == "VA502"]
    assert not [n for n in result.notes if "skipped" in n or "failed" in n], result.notes


def test_one_vector_under_two_versions_of_a_text_is_info_and_under_another_text_medium(  # type: ignore[no-untyped-def]
    tmp_path: Path, wiki, sqlite_ledger_url: str
) -> None:
    rows, vecs = wiki
    texts = [r["text"] for r in rows]
    # a wire story re-sent with its tail changed beyond the model's window embeds to the very same vector
    revised = ". ".join(texts[25].split(". ")[:-1]) + ". It was revised in a later edition with new material."
    texts, vecs = [*texts, revised, texts[40]], np.concatenate([vecs, vecs[25:26], vecs[30:31]])
    uri = build_qdrant_store(tmp_path / "s", vecs, [{"text": t} for t in texts])
    result = run_scan(uri, sqlite_ledger_url, detectors=["integrity"], field_map=FieldMap(text="text"))
    got = {r.finding.point_id: r.finding for r in result.findings if r.finding.rule_id == "VA105"}
    assert got[120].evidence["versions"] is True and got[120].effective_severity.value == "info"
    assert "another version of this one" in got[25].message
    # document 40's text stored under document 30's vector: different texts behind one vector stay MEDIUM
    assert got[121].effective_severity.value == "medium" and "versions" not in got[121].evidence


def test_a_utf16_page_read_as_utf8_is_a_low_ingestion_fault_and_a_stray_nul_stays_medium(
    tmp_path: Path, wiki, sqlite_ledger_url: str  # type: ignore[no-untyped-def]
) -> None:
    """Text stored as UTF-16 and read as UTF-8 holds a NUL after every character: nothing is hidden, every
    character is still there, so it is reported LOW as an ingestion fault. One NUL inside a text (which cuts the
    string short for a C consumer) keeps its MEDIUM."""
    rows, vecs = wiki
    payloads = [{"text": r["text"]} for r in rows[:30]]
    text = rows[4]["text"]  # the second half stored as UTF-16, as a web page mixing encodings
    payloads[4]["text"] = text[: len(text) // 2] + "".join(c + "\x00" for c in text[len(text) // 2 :])
    payloads[9]["text"] = rows[9]["text"][:40] + "\x00" + rows[9]["text"][40:]
    uri = build_qdrant_store(tmp_path / "store", vecs[:30], payloads)
    result = run_scan(uri, sqlite_ledger_url)
    assert result.status == "completed", result.error
    flagged = {r.finding.point_id: r.finding for r in result.findings if r.finding.rule_id == "VA110"}
    assert set(flagged) == {4, 9}
    assert flagged[4].effective_severity.value == "low" and flagged[4].evidence["utf16_as_utf8"] is True
    assert "UTF-16 text read as UTF-8" in flagged[4].message
    assert flagged[9].effective_severity.value == "medium" and flagged[9].evidence["utf16_as_utf8"] is False
