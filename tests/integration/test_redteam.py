"""Red-team self-test on a real store of real text: counts match the planted ground truth, the source is untouched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner
from conftest import load_jsonl
from support import build_qdrant_store, read_collection

from auditor.cli.main import cli
from auditor.ledger import Ledger
from auditor.ledger import repository as repo
from auditor.redteam.runner import EXPECTED


def test_redteam_report_matches_ground_truth_and_leaves_source_unchanged(tmp_path: Path, embed: Any) -> None:
    wiki = load_jsonl("wikipedia_en.jsonl")[:90]
    pub = load_jsonl("pubmed.jsonl")[:60]
    texts = [r["text"] for r in wiki + pub]
    payloads = [{"text": t, "tenant": "wiki" if i < 90 else "pubmed"} for i, t in enumerate(texts)]
    source = build_qdrant_store(tmp_path / "src", embed(texts), payloads)
    before = read_collection(source)
    into = tmp_path / "scratch"
    result = CliRunner().invoke(
        cli,
        [
            "redteam",
            source,
            "--collection",
            "docs",
            "--text-field",
            "text",
            "--tenant-field",
            "tenant",
            "--into",
            str(into),
            "--per-class",
            "5",
            "--seed",
            "3",
            "--format",
            "json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert read_collection(source) == before  # the source is never written

    classes = doc["classes"]
    assert {
        "poison",
        "hub",
        "tamper-swap",
        "tamper-query",
        "tamper-perturb",
        "cross-tenant-copy",
        "misfiled",
        "unlabeled",
        "injection",
        "secret",
        "pii",
    } <= set(classes)
    scratch = read_collection(doc["ledger"].replace("sqlite:///", "qdrant+local://").replace("ledger.db", "qdrant"))
    assert (
        len(scratch)
        == 150 + classes["poison"]["planted"] + classes["hub"]["planted"] + classes["cross-tenant-copy"]["planted"]
    )
    # ground truth in the scratch store itself: unlabeled points lost their tenant, misfiled ones changed it
    original = {pid: payload for pid, (_, payload) in before.items()}
    changed_tenant = {
        pid
        for pid, (_, p) in scratch.items()
        if pid in original and p.get("tenant") != original[pid].get("tenant") and "tenant" in p
    }
    no_tenant = {pid for pid, (_, p) in scratch.items() if "tenant" not in p}
    assert classes["misfiled"]["planted"] == len(changed_tenant)
    assert classes["unlabeled"]["planted"] == len(no_tenant)
    swapped = {
        pid
        for pid, (vec, _) in scratch.items()
        if pid in before and vec != before[pid][0] and scratch[pid][1].get("text") == before[pid][1].get("text")
    }
    tampered = sum(classes[c]["planted"] for c in ("tamper-swap", "tamper-query", "tamper-perturb"))
    assert len(swapped) == tampered

    # caught/missed recomputed independently from the scratch ledger's findings
    ledger = Ledger(doc["ledger"]).open()
    with ledger.session() as s:
        rows = repo.query_findings(s, repo.FindingFilter(scan_id=doc["scan_id"]))
        flagged = {(r.detector, json.loads(r.point_key)) for r in rows if r.point_key}
    ledger.dispose()
    for attack, c in classes.items():
        assert c["caught"] + c["missed"] == c["planted"]
        missed = {m["point_id"] for m in c["missed_points"]}
        assert len(missed) == c["missed"]
        for pid in missed:
            assert not any((d, pid) in flagged for d in EXPECTED[attack])
    # tampering is caught: the baseline scan makes every changed vector visible
    assert classes["tamper-swap"]["recall"] == 1.0 and classes["tamper-query"]["recall"] == 1.0
    assert classes["unlabeled"]["recall"] == 1.0
    assert np.isclose(classes["unlabeled"]["recall"], classes["unlabeled"]["caught"] / classes["unlabeled"]["planted"])
