"""tenant-marker on a real Qdrant local store of real emails: configured names, domains, account patterns and
canaries of one tenant found in another tenant's text; matched values masked in evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import load_jsonl
from support import build_qdrant_store, run_scan

from auditor.context import ScanSettings
from auditor.errors import ConfigError
from detectors.tenant_markers import compile_markers

CANARY = "zq-canary-7f3a91"
MARKERS = {
    "acme": {"names": ["Acme Rockets"], "domains": ["acme-rockets.example"], "patterns": [r"\bACM-\d{6}\b"],
             "canaries": [CANARY]},
    "globex": {"names": ["Globex"], "domains": ["globex.example"]},
}


@pytest.fixture(scope="module")
def corpus(embed: Any) -> tuple[list[str], Any]:
    texts = [r["text"] for r in load_jsonl("emails.jsonl")[:40]]
    texts[30] += f"\nForwarded from jane@billing.acme-rockets.example, account ACM-123456. Ref {CANARY}"
    texts[31] += "\nAcme Rockets quarterly review attached."
    texts[5] += "\nSee the Acme Rockets contract, account ACM-654321."  # acme's own markers: fine
    texts[32] += "\nThanks, the GLOBEX team (support@globex.example)"  # globex markers in a globex text: fine
    return texts, embed(texts)


def test_foreign_markers_are_found_and_masked(tmp_path: Path, corpus: Any, sqlite_ledger_url: str) -> None:
    texts, vecs = corpus
    tenants = ["acme"] * 20 + ["globex"] * 20
    payloads = [{"text": t, "tenant": g} for t, g in zip(texts, tenants)]
    uri = build_qdrant_store(tmp_path / "store", vecs, payloads)
    result = run_scan(uri, sqlite_ledger_url, detectors=["tenant-marker"],
                      settings=ScanSettings(extra={"tenant_markers": MARKERS}))
    got = {(r.finding.point_id, r.finding.rule_id): r.finding for r in result.findings}
    assert set(got) == {(30, "VA431"), (30, "VA432"), (30, "VA433"), (31, "VA433")}
    assert got[(30, "VA431")].effective_severity.value == "critical"
    assert got[(30, "VA433")].evidence["matches"][0]["kind"] == "domains"  # a subdomain's address counts
    evidence = str([f.evidence for f in got.values()])
    assert CANARY not in evidence and "123456" not in evidence  # canaries and account numbers are masked
    assert all(f.evidence["from_tenant"] == "acme" and f.tenant == "globex" for f in got.values())


def test_not_configured_means_skipped(tmp_path: Path, corpus: Any, sqlite_ledger_url: str) -> None:
    texts, vecs = corpus
    uri = build_qdrant_store(tmp_path / "store", vecs, [{"text": t, "tenant": "acme"} for t in texts])
    result = run_scan(uri, sqlite_ledger_url, detectors=["tenant-marker"])
    assert result.findings == [] and any("tenant-marker skipped" in n for n in result.notes)


def test_bad_config_names_the_problem() -> None:
    with pytest.raises(ConfigError, match="bad pattern"):
        compile_markers({"acme": {"patterns": ["ACM-("]}})
    with pytest.raises(ConfigError, match="unknown marker kind 'emails'"):
        compile_markers({"acme": {"emails": ["x"]}})
