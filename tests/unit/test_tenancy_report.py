"""The tenancy report (library and `vecaudit tenants`) from a real scan of a real Qdrant local store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import load_jsonl
from support import build_qdrant_store, run_scan

from auditor.cli.main import cli
from auditor.cli.tenants import tenants_command
from auditor.ledger import Ledger
from auditor.tenancy import build_report, finding_matrix


@pytest.fixture(scope="module")
def corpus(embed: Any) -> tuple[list[str], list[Any], Any]:
    wiki = [r["text"] for r in load_jsonl("wikipedia_en.jsonl")[:60]]
    pubmed = [r["text"] for r in load_jsonl("pubmed.jsonl")[:60]]
    texts = [*wiki, *pubmed, wiki[0]]  # 121: acme's first document copied into globex
    tenants: list[Any] = ["acme"] * 60 + ["globex"] * 60 + ["globex"]
    tenants[65] = "acme"  # a pubmed abstract misfiled under the wikipedia tenant
    tenants[10], tenants[11] = "", None  # unlabeled
    return texts, tenants, embed(texts)


@pytest.fixture(scope="module", autouse=True)
def registered() -> None:
    """The command as users reach it: through the `vecaudit` group that maps errors to exit codes."""
    if "tenants" not in cli.commands:
        cli.add_command(tenants_command)


def test_report_counts_and_matrix(tmp_path: Path, corpus: Any, sqlite_ledger_url: str) -> None:
    texts, tenants, vecs = corpus
    uri = build_qdrant_store(tmp_path / "store", vecs, [{"text": t, "tenant": g} for t, g in zip(texts, tenants)])
    result = run_scan(uri, sqlite_ledger_url, detectors=["tenant-label", "cross-tenant-copy", "misfiled"])
    assert result.status == "completed"
    ledger = Ledger(sqlite_ledger_url).open()
    try:
        with ledger.session() as s:
            report = build_report(s, "docs")
    finally:
        ledger.dispose()
    assert report.counts == {"acme": 59, "globex": 60, None: 2}
    assert report.total == 121 and report.unlabeled == 2
    doc = report.as_dict()
    # single scan: which tenant had the copy first is unknown; the pair is one finding, on the later point
    assert doc["matrix"]["copies"] == {"acme": {"globex": 1}}
    # the matrix counts exactly the misfiled findings: the moved abstract (65) and nothing else (the
    # copied wikipedia text under globex, 120, is cross-tenant-copy's)
    misfiled = {r.finding.point_id for r in result.findings if r.finding.detector == "misfiled"}
    assert misfiled == {65}
    cells = sum(n for row in doc["matrix"]["misfiled"].values() for n in row.values())
    assert cells == len(misfiled)
    ranked = run_scan(uri, sqlite_ledger_url.replace(".db", "-ranked.db"), detectors=["misfiled"],
                      params={"misfiled": {"min_score": -50.0, "review_budget": 0}})
    scores = sorted(((r.finding.score, r.finding.point_id) for r in ranked.findings), reverse=True)
    assert scores[0][1] == 65 and 120 not in {pid for _, pid in scores}  # the moved point outranks every clean one
    text = report.tables()
    assert "(unlabeled)" in text and "copies (rows: from tenant" in text and "misfiled" in text

    runner = CliRunner()
    out = runner.invoke(cli, ["tenants", "--ledger", sqlite_ledger_url, "--collection", "docs", "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == json.loads(json.dumps(doc))
    table = runner.invoke(cli, ["tenants", "--ledger", sqlite_ledger_url])
    assert table.exit_code == 0 and "globex" in table.stdout


def test_unknown_collection_is_a_usage_error(tmp_path: Path, sqlite_ledger_url: str) -> None:
    Ledger(sqlite_ledger_url).open().dispose()
    out = CliRunner().invoke(cli, ["tenants", "--ledger", sqlite_ledger_url, "--collection", "nope"])
    assert out.exit_code == 2


def test_finding_matrix_ignores_other_rules() -> None:
    items = [("VA412", "b", {"from_tenant": "a"}), ("VA412", "b", {"from_tenant": "a"}),
             ("VA421", None, {"likely_tenant": "c"}), ("VA421", "a", {"likely_tenant": "b", "tenants": ["x"]}),
             ("VA101", "x", {})]
    assert finding_matrix(items) == {"copies": {"a": {"b": 2}}, "misfiled": {"c": {"(unlabeled)": 1}, "b": {"a": 1}}}


def test_finding_matrix_reads_misfiled_findings_of_older_ledgers() -> None:
    # ledgers written before the rename hold the likely tenant of a misfiled document as ``from_tenant``
    assert finding_matrix([("VA421", "a", {"from_tenant": "b"})]) == {"misfiled": {"b": {"a": 1}}}
