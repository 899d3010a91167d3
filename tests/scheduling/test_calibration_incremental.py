"""Review-driven calibration with `--incremental`: findings carried over from unchanged points are judged by this
scan's alert lines, not the last one's (a reset brings carried findings back to their own severity)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import load_jsonl
from support import build_qdrant_store

from auditor import calibration
from auditor.context import ScanSettings
from auditor.engine import Scanner, ScanOptions, ScanResult
from auditor.ledger import Ledger
from auditor.ledger.repository import add_review
from auditor.registry import connector_for
from auditor.types import FieldMap, Severity
from detectors.pii import PiiDetector

# published example IBANs (valid check digits)
IBANS = ["GB82 WEST 1234 5698 7654 32", "DE89 3704 0044 0532 0130 00", "FR14 2004 1010 0505 0001 3M02 606",
         "NL91 ABNA 0417 1643 00", "ES91 2100 0418 4502 0005 1332", "IT60 X054 2811 1010 0000 0123 456"]


def _scan(uri: str, ledger_url: str, state: Path) -> ScanResult:
    ledger = Ledger(ledger_url).open()
    connector = connector_for(uri, collection="docs")
    try:
        opts = ScanOptions(field_map=FieldMap(text="text"), settings=ScanSettings(), show_progress=False,
                           incremental=True, state_dir=str(state))
        return Scanner(ledger, connector, [PiiDetector()], opts).run()
    finally:
        connector.close()
        ledger.dispose()


def _ibans(result: ScanResult) -> dict[Any, Any]:
    return {r.finding.point_id: r for r in result.findings if r.finding.rule_id == "VA534"}


def test_carried_findings_follow_the_current_alert_line(tmp_path: Path, sqlite_ledger_url: str, embed: Any) -> None:
    rows = load_jsonl("wikipedia_en.jsonl")[:30]
    texts = [r["text"] for r in rows]
    vecs = embed(texts)
    texts[: len(IBANS)] = [f"{t} Donations go to the account {iban}." for t, iban in zip(texts, IBANS, strict=False)]
    uri = build_qdrant_store(tmp_path / "store", vecs, [{"text": t} for t in texts])
    state = tmp_path / "state"

    first = _ibans(_scan(uri, sqlite_ledger_url, state))
    assert set(first) == set(range(len(IBANS))) and all(r.finding.effective_severity == Severity.MEDIUM
                                                         for r in first.values())
    ledger = Ledger(sqlite_ledger_url).open()
    with ledger.session() as s:
        for r in list(first.values())[: calibration.MIN_FALSE_POSITIVES]:
            add_review(s, finding_id=r.row_id, reviewer="bob", verdict="false_positive", note="charity accounts")

    second = _scan(uri, sqlite_ledger_url, state)
    assert any("finding(s) carried from scan" in n for n in second.notes)  # the IBANs are carried, not re-read
    kept = _ibans(second)
    assert all(r.finding.effective_severity == Severity.LOW for r in kept.values())
    assert any(n.startswith("calibration: VA534 alerts only above") for n in second.notes)

    third = _ibans(_scan(uri, sqlite_ledger_url, state))  # carried again: still LOW, calibrated once
    assert all(r.finding.effective_severity == Severity.LOW and r.finding.evidence["calibration"]["severity_before"]
               == "medium" for r in third.values())

    with ledger.session() as s:
        calibration.reset(s, 1, rule_id=None, actor="bob")
    ledger.dispose()
    fourth = _scan(uri, sqlite_ledger_url, state)
    assert any("finding(s) carried from scan" in n for n in fourth.notes)
    back = _ibans(fourth)
    assert set(back) == set(first)
    assert all(r.finding.effective_severity == Severity.MEDIUM and "calibration" not in r.finding.evidence
               for r in back.values())
    # the one open IBAN finding was LOW last scan and is MEDIUM again: it alerts once
    assert [r.alert_reason for r in back.values() if r.status == "open"] == ["raised from low since the last scan"]
