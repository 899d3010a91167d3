"""tenant-label on a real Qdrant local store of real text: bad, undeclared and variant tenant values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import load_jsonl
from support import build_qdrant_store, run_scan

from auditor.context import ScanSettings
from detectors.tenant_labels import normalise_tenant


@pytest.fixture(scope="module")
def corpus(embed: Any) -> tuple[list[dict[str, Any]], Any]:
    rows = load_jsonl("wikipedia_en.jsonl")[:80]
    return rows, embed([r["text"] for r in rows])


def _labels(result: Any) -> dict[Any, set[str]]:
    out: dict[Any, set[str]] = {}
    for rec in result.findings:
        out.setdefault(rec.finding.point_id, set()).add(rec.finding.rule_id)
    return out


def _store(tmp_path: Path, corpus: Any, tenants: list[Any]) -> str:
    rows, vecs = corpus
    payloads: list[dict[str, Any]] = []
    for r, t in zip(rows, tenants, strict=True):
        p: dict[str, Any] = {"text": r["text"]}
        if t is not _ABSENT:
            p["tenant"] = t
        payloads.append(p)
    return build_qdrant_store(tmp_path / "store", vecs, payloads)


_ABSENT = object()


def test_bad_values_and_variants_without_declared_set(tmp_path: Path, corpus: Any, sqlite_ledger_url: str) -> None:
    tenants: list[Any] = ["acme" if i % 2 else "globex" for i in range(80)]
    planted = {3: None, 4: "", 5: "   ", 6: ["acme"], 7: True, 8: "Acme ", 9: "GLOBEX", 10: "acmee", 11: "glo-bex"}
    for i, value in planted.items():
        tenants[i] = value
    tenants[12] = _ABSENT  # VA108 (integrity) only
    uri = _store(tmp_path, corpus, tenants)
    result = run_scan(uri, sqlite_ledger_url, detectors=["tenant-label", "integrity"])
    got = _labels(result)
    assert {i: got.get(i) for i in range(3, 8)} == {i: {"VA401"} for i in range(3, 8)}
    assert {i: got.get(i) for i in range(8, 12)} == {i: {"VA403"} for i in range(8, 12)}
    assert got.get(12) == {"VA108"}  # the missing field is not reported twice
    assert set(got) == set(range(3, 13))  # clean labels are never reported
    variant = next(r.finding for r in result.findings if r.finding.point_id == 10)
    assert variant.evidence["canonical"] == "acme" and variant.evidence["match"] == "near spelling"


def test_declared_set(tmp_path: Path, corpus: Any, sqlite_ledger_url: str) -> None:
    tenants: list[Any] = ["acme" if i % 2 else "globex" for i in range(80)]
    tenants[20], tenants[21], tenants[22] = "initech", "ACME", "globexx"
    tenants[23] = 7  # a number where the others are strings: a keyword filter misses it
    uri = _store(tmp_path, corpus, tenants)
    result = run_scan(uri, sqlite_ledger_url, detectors=["tenant-label"],
                      settings=ScanSettings(tenants=("acme", "globex")))
    assert _labels(result) == {20: {"VA402"}, 21: {"VA403"}, 22: {"VA403"}, 23: {"VA401"}}


def test_digit_only_differences_are_distinct_tenants(tmp_path: Path, corpus: Any, sqlite_ledger_url: str) -> None:
    tenants: list[Any] = ["team-1"] * 70 + ["team-2"] * 5 + ["Team 1"] * 5
    uri = _store(tmp_path, corpus, tenants)
    result = run_scan(uri, sqlite_ledger_url, detectors=["tenant-label"])
    assert set(_labels(result)) == set(range(75, 80))  # "Team 1" is a variant, "team-2" is not


def test_bidi_override_and_zero_width_characters_in_a_tenant_value(
    tmp_path: Path, corpus: Any, sqlite_ledger_url: str
) -> None:
    """docs/tenancy.md: a label that hides characters is reported (VA404) and compared without them (VA403);
    labels in other scripts are not."""
    tenants: list[Any] = ["acme" if i % 2 else "globex" for i in range(80)]
    tenants[30] = "\u202eemca"  # RIGHT-TO-LEFT OVERRIDE: reads "acme" on screen
    tenants[31] = "ac\u200bme"  # a zero-width space inside acme
    tenants[32] = "globex\u2069"  # a stray POP DIRECTIONAL ISOLATE
    tenants[33] = tenants[34] = "Müller & Søn"  # a real, visible tenant name
    uri = _store(tmp_path, corpus, tenants)
    result = run_scan(uri, sqlite_ledger_url, detectors=["tenant-label"])
    assert _labels(result) == {30: {"VA404"}, 31: {"VA403", "VA404"}, 32: {"VA403", "VA404"}}
    hidden = {r.finding.point_id: r.finding for r in result.findings if r.finding.rule_id == "VA404"}
    assert hidden[30].evidence["characters"] == ["U+202E"] and hidden[30].evidence["visible"] == "emca"
    assert "U+202E RIGHT-TO-LEFT OVERRIDE" in hidden[30].message and "\u202e" not in hidden[30].message
    variant = next(r.finding for r in result.findings if r.finding.point_id == 31 and r.finding.rule_id == "VA403")
    assert variant.evidence["canonical"] == "acme"
    declared = run_scan(uri, sqlite_ledger_url, detectors=["tenant-label"],
                        settings=ScanSettings(tenants=("acme", "globex", "Müller & Søn")))
    assert _labels(declared) == {30: {"VA402", "VA404"}, 31: {"VA403", "VA404"}, 32: {"VA403", "VA404"}}


def test_normalise_tenant() -> None:
    assert normalise_tenant(" Acme_Corp ") == normalise_tenant("acme corp") == "acmecorp"
    assert normalise_tenant("ac\u200bme\u202c") == normalise_tenant("\u2066ACME") == "acme"


def test_tenant_cleared_after_ingest(tmp_path: Path, corpus: Any, sqlite_ledger_url: str) -> None:
    # Qdrant drops a payload key that set_payload sets to null (an upserted null stays null): the cleared
    # tenant arrives as a missing field, reported once, by integrity's VA108 (the benchmark's null plants)
    from qdrant_client import QdrantClient

    uri = _store(tmp_path, corpus, ["acme" if i % 2 else "globex" for i in range(80)])
    client = QdrantClient(path=str(tmp_path / "store"))
    client.set_payload("docs", {"tenant": None}, points=[3])
    client.set_payload("docs", {"tenant": []}, points=[4])
    client.close()
    result = run_scan(uri, sqlite_ledger_url, detectors=["tenant-label", "integrity"])
    assert _labels(result) == {3: {"VA108"}, 4: {"VA401"}}
