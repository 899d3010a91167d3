"""isolation-probe against a real Qdrant local store: a deliberately wrong tenant filter leaks, the right one
does not; probes stay off unless asked for."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import load_jsonl
from support import build_qdrant_store, run_scan

from auditor.context import ScanSettings
from detectors.isolation_probes import fill_filter


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, embed: Any) -> str:
    wiki = [r["text"] for r in load_jsonl("wikipedia_en.jsonl")[:60]]
    pubmed = [r["text"] for r in load_jsonl("pubmed.jsonl")[:30]]
    texts = wiki + pubmed
    tenants = ["acme"] * 30 + ["globex"] * 30 + ["initech"] * 30
    payloads = [{"text": t, "tenant": g, "lang": "en"} for t, g in zip(texts, tenants)]
    return build_qdrant_store(tmp_path_factory.mktemp("probe") / "store", embed(texts), payloads)


def _probe(uri: str, ledger: str, probe_filter: dict[str, Any] | None, probe: bool = True) -> Any:
    extra = {"probe_filter": probe_filter} if probe_filter is not None else {}
    return run_scan(uri, ledger, detectors=["isolation-probe"], settings=ScanSettings(probe=probe, extra=extra),
                    params={"isolation-probe": {"sample_per_tenant": 5, "limit": 10}})


def test_right_filter_does_not_leak(store: str, sqlite_ledger_url: str) -> None:
    result = _probe(store, sqlite_ledger_url, {"must": [{"key": "tenant", "match": {"value": "{tenant}"}}]})
    assert result.status == "completed" and result.findings == []
    assert sum("isolation probe: tenant" in n and "clean" in n for n in result.notes) == 3
    assert any("cannot check payload indexes" in n for n in result.notes)  # local mode says what it cannot see


def test_default_filter_does_not_leak(store: str, sqlite_ledger_url: str) -> None:
    assert _probe(store, sqlite_ledger_url, None).findings == []


def test_wrong_filter_leaks_with_exact_filter_and_foreign_hits(store: str, sqlite_ledger_url: str) -> None:
    # the app meant "this tenant's documents, in English" but wrote `should`, so any English document passes
    wrong = {"should": [{"key": "tenant", "match": {"value": "{tenant}"}}, {"key": "lang", "match": {"value": "en"}}]}
    result = _probe(store, sqlite_ledger_url, wrong)
    leaks = {r.finding.tenant: r.finding for r in result.findings}
    assert set(leaks) == {"acme", "globex", "initech"}
    for tenant, finding in leaks.items():
        assert finding.rule_id == "VA441" and finding.point_id is None and finding.score >= 1
        ev = finding.evidence
        assert ev["filter"] == fill_filter(wrong, tenant)
        assert ev["foreign_hits"] and all(h["hit_tenant"] != tenant for h in ev["foreign_hits"])
        assert "text" not in str(ev["foreign_hits"])  # ids and tenants, never the foreign text
    assert result.exit_code() == 1


def test_probes_are_opt_in(store: str, sqlite_ledger_url: str) -> None:
    result = _probe(store, sqlite_ledger_url, None, probe=False)
    assert result.findings == []
    assert any("isolation-probe skipped" in n and "--probe" in n for n in result.notes)


def test_fill_filter() -> None:
    spec = {"must": [{"key": "t", "match": {"value": "{tenant}"}}, {"key": "path", "match": {"text": "/{tenant}/"}}]}
    assert fill_filter(spec, "a") == {"must": [{"key": "t", "match": {"value": "a"}},
                                              {"key": "path", "match": {"text": "/a/"}}]}
