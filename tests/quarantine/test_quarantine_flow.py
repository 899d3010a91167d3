"""Quarantine end to end on a real Qdrant local store of real text (real model): plan, apply in both modes,
the retrieval guard, release bit-exact, refusals, and the audit trail in `findings show` / `history`."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner
from quarantine_support import (
    DOC_ID_CLASH,
    FLAG,
    HIJACKED_VECTOR,
    NO_TENANT,
    POISONS,
    QUARANTINE,
    assert_quarantined,
    assert_restored,
    case,
    case_template,
    findings_of,
    snapshot,
)

from auditor.cli.main import cli
from auditor.guard import exclude_quarantined
from auditor.ledger import Ledger
from auditor.quarantine import Quarantine, Selection, list_actions, plan


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


__all__ = ["case", "case_template"]  # fixtures


def test_plan_takes_confirmed_findings_only(case: Any) -> None:
    ledger = Ledger(case.ledger_url).open()
    items = plan(ledger, Selection(scan_id=case.scan_id))
    todo = {i.point_id for i in items if not i.skip}
    assert todo == set(POISONS)
    skipped = {i.point_id: i.skip for i in items if i.skip}
    assert "not confirmed" in (skipped[0] or "") and "not confirmed" in (skipped[1] or "")
    forced = plan(ledger, Selection(scan_id=case.scan_id), force=True)
    assert {0, 1} <= {i.point_id for i in forced if not i.skip}
    result = invoke("quarantine", "plan", "--scan", str(case.scan_id), "--ledger", case.ledger_url, "--format", "json")
    assert result.exit_code == 0
    doc = json.loads(result.output)
    assert {p["point_id"] for p in doc["plan"] if p["change"]} == set(POISONS)
    assert snapshot(case.uri) == case.original  # plan reads the ledger only
    ledger.dispose()


def test_tag_apply_guard_and_bit_exact_release(case: Any) -> None:
    result = invoke("quarantine", "apply", "--scan", str(case.scan_id), "--yes", "--ledger", case.ledger_url)
    assert result.exit_code == 0, result.output
    assert_quarantined(case.uri, case.original, POISONS, "tag")

    # the retrieval guard: a search for the hijacked vector no longer returns the poison
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(case.path))
    try:
        query = list(json.loads(json.dumps(client.retrieve("docs", [0], with_vectors=True)[0].vector)))
        unguarded = [p.id for p in client.query_points("docs", query=query, limit=5).points]
        guard = exclude_quarantined()
        guarded = [p.id for p in client.query_points("docs", query=query, query_filter=guard, limit=5).points]
        flagged = (client.retrieve("docs", [HIJACKED_VECTOR])[0].payload or {})[FLAG]
    finally:
        client.close()
    assert HIJACKED_VECTOR in unguarded and HIJACKED_VECTOR not in guarded
    assert 0 in guarded
    assert flagged["finding_ids"] == [case.confirmed[HIJACKED_VECTOR]] and flagged["by"]

    # the audit trail
    for row in findings_of(case.ledger_url, HIJACKED_VECTOR):
        if row.id == case.confirmed[HIJACKED_VECTOR]:
            assert row.status == "quarantined"
    shown = invoke("findings", "show", str(case.confirmed[NO_TENANT]), "--ledger", case.ledger_url)
    assert "quarantine #" in shown.output and "tag applied" in shown.output
    history = invoke("history", str(NO_TENANT), "--ledger", case.ledger_url, "--format", "json")
    trail = json.loads(history.output)["quarantine"]
    assert trail[0]["state"] == "applied" and trail[0]["finding_ids"] == [case.confirmed[NO_TENANT]]

    again = invoke("quarantine", "apply", "--scan", str(case.scan_id), "--yes", "--ledger", case.ledger_url)
    assert again.exit_code == 0 and "nothing to quarantine" in again.output
    listed = invoke("quarantine", "list", "--ledger", case.ledger_url, "--format", "json")
    actions = json.loads(listed.output)["actions"]
    assert len(actions) == 3 and {a["state"] for a in actions} == {"applied"}

    ids = [str(a["action_id"]) for a in actions]
    released = invoke("quarantine", "release", *ids, "--yes", "--ledger", case.ledger_url)
    assert released.exit_code == 0, released.output
    assert_restored(case.uri, case.original)
    ledger = Ledger(case.ledger_url).open()
    assert {a.state for a in list_actions(ledger)} == {"released"}
    assert all(a.released_by and a.released_at for a in list_actions(ledger))
    ledger.dispose()
    assert {r.status for r in findings_of(case.ledger_url, NO_TENANT)} == {"confirmed"}
    shown = invoke("findings", "show", str(case.confirmed[NO_TENANT]), "--ledger", case.ledger_url)
    assert "tag released by" in shown.output


def test_move_mode_copies_then_deletes_and_release_restores_bit_exact(case: Any) -> None:
    ids = map(str, case.confirmed.values())
    result = invoke("quarantine", "apply", *ids, "--mode", "move", "--yes", "--ledger", case.ledger_url)
    assert result.exit_code == 0, result.output
    assert_quarantined(case.uri, case.original, POISONS, "move")
    released = invoke("quarantine", "release", "--point", str(DOC_ID_CLASH), "--yes", "--ledger", case.ledger_url)
    assert released.exit_code == 0, released.output
    now = snapshot(case.uri)
    assert now["docs"][DOC_ID_CLASH] == case.original["docs"][DOC_ID_CLASH]
    assert DOC_ID_CLASH not in now[QUARANTINE]
    rest = [a.id for a in list_actions(Ledger(case.ledger_url).open(), states=["applied"])]
    assert len(rest) == 2
    assert invoke("quarantine", "release", *map(str, rest), "--yes", "--ledger", case.ledger_url).exit_code == 0
    assert_restored(case.uri, case.original)


def test_point_changed_since_scan_is_refused_unless_forced(case: Any) -> None:
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(case.path))
    try:
        client.set_payload("docs", {"text": "rewritten by someone after the scan"}, points=[NO_TENANT])
    finally:
        client.close()
    changed = snapshot(case.uri)
    fid = str(case.confirmed[NO_TENANT])
    result = invoke("quarantine", "apply", fid, "--yes", "--ledger", case.ledger_url)
    assert result.exit_code == 3
    assert "text and payload changed since scan" in result.output
    assert snapshot(case.uri) == changed
    ledger = Ledger(case.ledger_url).open()
    (action,) = list_actions(ledger)
    assert action.state == "failed" and action.applied_at is None and "changed" in (action.error or "")
    forced = invoke("quarantine", "apply", fid, "--yes", "--force", "--ledger", case.ledger_url)
    assert forced.exit_code == 0, forced.output
    backup = list_actions(ledger, states=["applied"])[0].backup or {}
    assert backup["payload"]["text"] == "rewritten by someone after the scan"
    ledger.dispose()


def test_dry_run_and_unconfirmed_write_nothing(case: Any) -> None:
    dry = invoke("quarantine", "apply", "--scan", str(case.scan_id), "--dry-run", "--ledger", case.ledger_url)
    assert dry.exit_code == 0 and dry.output.count("would set payload field") == 3
    unconfirmed = invoke("quarantine", "apply", str(case.open_findings[0]), "--yes", "--ledger", case.ledger_url)
    assert unconfirmed.exit_code == 0 and "not confirmed" in unconfirmed.output
    no_yes = CliRunner().invoke(cli, ["quarantine", "apply", "--scan", str(case.scan_id), "--ledger", case.ledger_url])
    assert no_yes.exit_code == 2 and "--yes" in no_yes.output
    assert snapshot(case.uri) == case.original
    assert list_actions(Ledger(case.ledger_url).open()) == []


def test_release_keeps_a_change_made_while_quarantined_unless_forced(case: Any) -> None:
    ledger = Ledger(case.ledger_url).open()
    runner = Quarantine(ledger, actor="bob")
    out = runner.apply(plan(ledger, Selection(finding_ids=[case.confirmed[NO_TENANT]])))
    assert [o.state for o in out] == ["applied"]
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(case.path))
    try:
        client.set_payload("docs", {"tenant": "acme"}, points=[NO_TENANT])  # someone fixes the label meanwhile
    finally:
        client.close()
    refused = runner.release([out[0].action_id])  # type: ignore[list-item]
    assert not refused[0].ok and "changed while quarantined" in refused[0].message
    assert list_actions(ledger)[0].state == "applied"
    forced = runner.release([out[0].action_id], force=True)  # type: ignore[list-item]
    assert forced[0].state == "released"
    assert_restored(case.uri, case.original)
    ledger.dispose()
