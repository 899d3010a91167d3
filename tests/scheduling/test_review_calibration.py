"""Humans close the loop, measured on real text with the real model: a reviewer marks the poison-cluster false
alarms on honest groups of retrieved passages (tests/data/hotpotqa_retrieved.jsonl) false_positive; the next scan,
which ingests more such groups, alerts on fewer of them than the same scan without the labels (a control ledger).
Planted poison (the PoisonedRAG authors' passages stored alone) loses exactly the passages scoring at or below the
new line — kept LOW with their score, not dropped — and a reviewer confirming one brings them back; `calibration
reset` undoes it all.

Today's default poison-cluster raises no VA322 on these 190 passages, so the scans run a sensitive configuration
(looser member similarity and claim score, no alert budget) that does raise false alarms on them: the loop is
what is measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import load_jsonl
from support import build_qdrant_store

from auditor.cli.main import cli
from auditor.context import ScanSettings
from auditor.engine import Scanner, ScanOptions, ScanResult
from auditor.ledger import Ledger
from auditor.registry import connector_for
from auditor.types import FieldMap, Severity
from detectors.poisoning import PoisonClusterDetector

# the alert budget off (1.0), and the claim-support and provenance signals off: each would hold these false alarms
# back (or, for provenance, raise the later groups that arrive together) itself; the review loop is what is measured
SENSITIVE = {"member_sim": 0.4, "claim_score": 0.3, "entity_agreement": 0.2, "alert_budget": 1.0,
             "review_budget": 1.0, "max_claim_support": 10**6, "provenance": False}
FIRST_GROUPS = {"q3", "q17", "q19", "q21", "q26", "q31", "q42", "q46", "q48", "q50", "q53", "q61", "q65", "q66", "q71"}


def _scan(uri: str, ledger_url: str) -> ScanResult:
    ledger = Ledger(ledger_url).open()
    connector = connector_for(uri, collection="docs")
    try:
        opts = ScanOptions(field_map=FieldMap(text="text"), settings=ScanSettings(), show_progress=False)
        return Scanner(ledger, connector, [PoisonClusterDetector(**SENSITIVE)], opts).run()
    finally:
        connector.close()
        ledger.dispose()


def _upsert(uri: str, start: int, texts: list[str], vectors: Any) -> list[int]:
    from qdrant_client import QdrantClient, models

    ids = list(range(start, start + len(texts)))
    client = QdrantClient(path=uri.removeprefix("qdrant+local://"))
    try:
        client.upsert("docs", [
            models.PointStruct(id=i, vector=v.tolist(), payload={"text": t})
            for i, t, v in zip(ids, texts, vectors, strict=True)
        ])
    finally:
        client.close()
    return ids


def _alerting_on(result: ScanResult, points: set[int], rule: str | None = None) -> set[int]:
    """Points of ``points`` that an alerting finding (of ``rule``) names."""
    return {
        r.finding.point_id for r in result.findings
        if r.alert and r.finding.point_id in points and (rule is None or r.finding.rule_id == rule)
    }


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.slow
def test_false_positive_verdicts_quiet_the_rule_and_planted_poison_is_still_caught(
    tmp_path: Path, embed: Any
) -> None:
    hot = load_jsonl("hotpotqa_retrieved.jsonl")
    first = [r["text"] for r in hot if r["target_id"] in FIRST_GROUPS]
    later = [r["text"] for r in hot if r["target_id"] not in FIRST_GROUPS]
    background = [r["text"] for r in load_jsonl("wikipedia_en.jsonl")[:100]]
    base = first + background
    uri = build_qdrant_store(tmp_path / "store", embed(base), [{"text": t} for t in base])
    labelled, control = f"sqlite:///{tmp_path / 'labelled.db'}", f"sqlite:///{tmp_path / 'control.db'}"

    baseline = _scan(uri, labelled)
    _scan(uri, control)
    false_alarms = [r for r in baseline.findings if r.finding.rule_id == "VA322"]
    assert len(false_alarms) >= 5, [(r.finding.point_id, r.finding.score) for r in false_alarms]
    out = invoke("findings", "label", *[r.row_id for r in false_alarms], "--verdict", "false_positive",
                 "--reviewer", "alice", "--note", "honest retrieved snippets", "--ledger", labelled)
    assert out.exit_code == 0, out.output
    shown = invoke("calibration", "show", "--ledger", labelled, "--format", "json")
    cal = {c["rule_id"]: c for c in __import__("json").loads(shown.stdout)["calibrations"]}
    line = cal["VA322"]["alert_above"]
    assert line == max(r.finding.score for r in false_alarms)

    # more honest groups arrive: the labelled collection alerts on fewer of them than the control
    new_ids = set(_upsert(uri, len(base), later, embed(later)))
    calibrated, uncalibrated = _scan(uri, labelled), _scan(uri, control)
    alerts_after = _alerting_on(calibrated, new_ids, "VA322")
    alerts_control = _alerting_on(uncalibrated, new_ids, "VA322")
    print(f"VA322 false alarms alerting on {len(new_ids)} new honest passages: "
          f"{len(alerts_control)} without labels, {len(alerts_after)} after {len(false_alarms)} labels "
          f"(line {line:.3f})")
    assert len(alerts_after) < len(alerts_control)
    kept_low = [r for r in calibrated.findings if "calibration" in r.finding.evidence]
    assert kept_low and all(r.finding.effective_severity == Severity.LOW and r.finding.score <= line for r in kept_low)
    assert any(n.startswith("calibration: VA322 alerts only above") for n in calibrated.notes)
    with Ledger(labelled).open().session() as s:
        from auditor.ledger.models import ScanRow

        scan = s.get(ScanRow, calibrated.scan_id)
        assert scan is not None
        config = next(c for c in scan.detector_configs if c["name"] == "poison-cluster")
        assert config["calibration"]["VA322"]["alert_above"] == line
        assert config["calibration"]["VA322"]["false_positives"] == len(false_alarms)

    # red team: the PoisonedRAG authors' passages for four of these questions, stored alone (no question bait),
    # planted into the labelled collection itself (a red-team copy is another collection: no calibration there)
    poisons = [r["text"] for r in load_jsonl("poisonedrag.jsonl")[:20]]
    planted = set(_upsert(uri, len(base) + len(later), poisons, embed(poisons)))
    after_plant, control_plant = _scan(uri, labelled), _scan(uri, control)
    caught, caught_control = _alerting_on(after_plant, planted), _alerting_on(control_plant, planted)
    print(f"PoisonedRAG passages caught (alerting): {len(caught_control)}/{len(planted)} without labels, "
          f"{len(caught)}/{len(planted)} after labelling")
    assert len(caught_control) >= 0.8 * len(planted)
    # what the labels cost is exactly the plants scoring at or below the line: kept LOW with their score, not dropped
    control_score = {r.finding.point_id: r.finding.score for r in control_plant.findings}
    assert caught == {p for p in caught_control if control_score[p] > line}
    lost = {r.finding.point_id: r for r in after_plant.findings if r.finding.point_id in caught_control - caught}
    assert set(lost) == caught_control - caught
    assert all(r.finding.effective_severity == Severity.LOW for r in lost.values())
    assert all(r.finding.evidence["calibration"]["severity_before"] == "medium" for r in lost.values())

    if lost:  # a reviewer confirms the lowest-scoring of them: the line drops below it and they all alert again
        lowest = min(lost.values(), key=lambda r: r.finding.score)
        assert invoke("findings", "label", lowest.row_id, "--verdict", "confirmed", "--ledger", labelled).exit_code == 0
        confirmed = _scan(uri, labelled)
        print(f"after confirming the lowest of them ({lowest.finding.score:.3f}): "
              f"{len(_alerting_on(confirmed, planted))} alert again")
        assert _alerting_on(confirmed, planted) == set(lost)
        assert all(r.alert_reason == "raised from low since the last scan"
                   for r in confirmed.findings if r.finding.point_id in lost)
        again = {r.finding.point_id for r in confirmed.findings if r.finding.effective_severity >= Severity.MEDIUM}
        assert caught_control <= again

    # reset: the rule alerts at its own threshold again; the verdicts themselves stay
    out = invoke("calibration", "reset", "--collection", "docs", "--rule", "VA322", "--ledger", labelled)
    assert out.exit_code == 0, out.output
    reset_scan = _scan(uri, labelled)
    assert not any("calibration" in r.finding.evidence for r in reset_scan.findings)
    assert not any(n.startswith("calibration:") for n in reset_scan.notes)
    assert {r.row_id for r in false_alarms} <= {r.row_id for r in reset_scan.findings if r.status == "false_positive"}
