"""`vecaudit findings export`: SARIF 2.1.0 valid against the official OASIS schema, and the JSON export, from
a real scan of a real store with planted faults and a reviewed finding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import DATA, load_jsonl
from support import build_qdrant_store, run_scan

from auditor.cli.main import cli
from auditor.types import FieldMap


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory, embed) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("sarif")
    rows = load_jsonl("wikipedia_en.jsonl")[:40]
    vecs = embed([r["text"] for r in rows]).copy()
    payloads: list[dict[str, Any]] = [{"text": r["text"], "tenant": "acme" if i < 20 else "globex"}
                                      for i, r in enumerate(rows)]
    vecs[2] = np.nan
    vecs[6] = vecs[7]
    del payloads[9]["tenant"]
    uri = build_qdrant_store(tmp / "store", vecs, payloads, distance="dot", validate=False)
    ledger = f"sqlite:///{tmp / 'ledger.db'}"
    first = run_scan(uri, ledger, detectors=["integrity"], field_map=FieldMap(text="text", tenant="tenant"))
    runner = CliRunner()
    missing_tenant = next(r for r in first.findings if r.finding.rule_id == "VA108")
    res = runner.invoke(cli, ["findings", "label", str(missing_tenant.row_id), "--verdict", "false_positive",
                              "--note", "legacy import", "--reviewer", "ana", "--ledger", ledger])
    assert res.exit_code == 0, res.output
    second = run_scan(uri, ledger, detectors=["integrity"], field_map=FieldMap(text="text", tenant="tenant"))
    return {"ledger": ledger, "first": first, "second": second, "label_id": missing_tenant.row_id}


def _validator() -> Any:
    import jsonschema

    schema = json.loads((DATA / "sarif" / "sarif-schema-2.1.0.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_sarif_export_is_schema_valid_and_complete(scanned: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "scan.sarif"
    res = CliRunner().invoke(cli, ["findings", "export", "--format", "sarif", "--scan", str(scanned["second"].scan_id),
                                   "--output", str(out), "--ledger", scanned["ledger"]])
    assert res.exit_code == 0, res.output
    log = json.loads(out.read_text())
    errors = sorted(_validator().iter_errors(log), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]

    assert log["version"] == "2.1.0"
    run = log["runs"][0]
    assert run["tool"]["driver"]["name"] == "vecaudit"
    rules = {r["id"]: r for r in run["tool"]["driver"]["rules"]}
    assert {"VA101", "VA105", "VA108"} <= set(rules)
    assert "OWASP-LLM08:2025 Vector and Embedding Weaknesses" in rules["VA101"]["properties"]["tags"]
    assert rules["VA101"]["properties"]["security-severity"] == "8.0"
    results = {(r["ruleId"], r["properties"]["pointId"]): r for r in run["results"]}
    assert {("VA101", 2), ("VA105", 6), ("VA105", 7), ("VA108", 9)} <= set(results)
    for r in run["results"]:
        assert run["tool"]["driver"]["rules"][r["ruleIndex"]]["id"] == r["ruleId"]
        assert len(r["partialFingerprints"]["vecauditFinding/v1"]) == 32
        assert r["baselineState"] == "unchanged"  # all first seen in the first scan
    nan = results[("VA101", 2)]
    assert nan["level"] == "error" and nan["properties"]["tenant"] == "acme"
    assert nan["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "docs/acme/2"
    assert results[("VA108", 9)]["suppressions"] == [
        {"kind": "external", "status": "rejected", "justification": "legacy import"}
    ]
    assert "suppressions" not in nan
    invocation = run["invocations"][0]
    assert invocation["executionSuccessful"] is True and invocation["properties"]["scanId"] == scanned["second"].scan_id


def test_json_export_to_stdout(scanned: dict[str, Any]) -> None:
    res = CliRunner().invoke(cli, ["findings", "export", "--format", "json", "--severity", "high",
                                   "--ledger", scanned["ledger"]])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["version"] == 1 and doc["scan"] is None
    assert {f["severity"] for f in doc["findings"]} <= {"high", "critical"}
    by_rule = {(f["rule_id"], f["point_id"]): f for f in doc["findings"]}
    assert ("VA101", 2) in by_rule and ("VA105", 6) not in by_rule  # medium left out
    labelled = by_rule[("VA108", 9)]
    assert labelled["status"] == "false_positive"
    # a missing tenant field is counted over the whole scan (once for the collection when nearly every point
    # lacks it), so VA108 is reported at the end of pass 1
    assert labelled["reviews"][0]["reviewer"] == "ana" and labelled["stage"] == "finish"
    assert by_rule[("VA101", 2)]["scan_id"] == scanned["second"].scan_id


def test_sarif_of_an_empty_selection_is_still_valid(scanned: dict[str, Any]) -> None:
    res = CliRunner().invoke(cli, ["findings", "export", "--collection", "no-such", "--ledger", scanned["ledger"]])
    assert res.exit_code == 0
    log = json.loads(res.output)
    assert log["runs"][0]["results"] == []
    assert not list(_validator().iter_errors(log))


def test_unknown_scan_is_a_usage_error(scanned: dict[str, Any]) -> None:
    res = CliRunner().invoke(cli, ["findings", "export", "--scan", "999", "--ledger", scanned["ledger"]])
    assert res.exit_code == 2 and "no scan with id 999" in res.output
