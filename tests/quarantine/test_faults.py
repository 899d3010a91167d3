"""Fault injection: SIGKILL a real `vecaudit quarantine` process right after each step of apply and of
release, then recover; every point must end in exactly one place, bit-identical to its original (read from a
reopened store). Backups are encrypted: the key is in the environment of the test and of the killed process."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from quarantine_support import (
    POISONS,
    QUARANTINE,
    assert_quarantined,
    assert_restored,
    backup_key,
    case,
    case_template,
    run_cli,
    snapshot,
)

from auditor.ledger import Ledger
from auditor.quarantine import Quarantine, Selection, list_actions, plan

__all__ = ["backup_key", "case", "case_template"]  # fixtures
pytestmark = pytest.mark.usefixtures("backup_key")

APPLY_STEPS = {
    "tag": ["apply:claim", "apply:backup", "apply:tag", "apply:mark"],
    "move": ["apply:claim", "apply:backup", "apply:copy", "apply:delete", "apply:mark"],
}
RELEASE_STEPS = {
    "tag": ["release:claim", "release:restore", "release:mark"],
    "move": ["release:claim", "release:restore", "release:delete_copy", "release:mark"],
}


def assert_nothing_lost(uri: str, original: Any) -> None:
    """Mid-crash invariant: every original point still exists somewhere with its exact vector bits."""
    now = snapshot(uri)
    for pid, (vectors, _) in original["docs"].items():
        places = [c for c in ("docs", QUARANTINE) if pid in now.get(c, {})]
        assert places, f"point {pid} is nowhere"
        assert all(now[c][pid][0] == vectors for c in places), f"point {pid} changed bits"


def assert_killed(proc: Any) -> None:
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize(
    ("mode", "step"), [(m, s) for m, steps in APPLY_STEPS.items() for s in steps], ids=lambda v: str(v)
)
def test_apply_killed_after_each_step_is_finished_by_recover(case: Any, mode: str, step: str) -> None:
    fids = [str(f) for f in case.confirmed.values()]
    proc = run_cli(["quarantine", "apply", *fids, "--mode", mode, "--yes", "--ledger", case.ledger_url], fault=step)
    assert_killed(proc)
    assert_nothing_lost(case.uri, case.original)

    ledger = Ledger(case.ledger_url).open()
    runner = Quarantine(ledger, actor="recoverer")
    recovered = runner.recover()
    assert all(o.ok for o in recovered), recovered
    # the points the killed run never reached are quarantined by re-running the same apply
    rerun = runner.apply(plan(ledger, Selection(finding_ids=list(case.confirmed.values())), mode=mode))
    assert all(o.ok for o in rerun), rerun
    assert_quarantined(case.uri, case.original, POISONS, mode)
    actions = list_actions(ledger)
    assert sorted(a.state for a in actions) == ["applied"] * 3, [(a.id, a.state) for a in actions]
    assert sorted(a.point_key for a in actions) == sorted(str(p) for p in POISONS)
    assert all(a.backup and a.backup["format"] == 2 and "payload" not in a.backup for a in actions)
    assert runner.recover() == []
    ledger.dispose()


@pytest.mark.parametrize(
    ("mode", "step"), [(m, s) for m, steps in RELEASE_STEPS.items() for s in steps], ids=lambda v: str(v)
)
def test_release_killed_after_each_step_is_finished_by_recover(case: Any, mode: str, step: str) -> None:
    ledger = Ledger(case.ledger_url).open()
    runner = Quarantine(ledger, actor="alice")
    applied = runner.apply(plan(ledger, Selection(finding_ids=list(case.confirmed.values())), mode=mode))
    assert [o.state for o in applied] == ["applied"] * 3
    ids = [str(o.action_id) for o in applied]
    proc = run_cli(["quarantine", "release", *ids, "--yes", "--ledger", case.ledger_url], fault=step)
    assert_killed(proc)
    assert_nothing_lost(case.uri, case.original)

    recovered = runner.recover()
    assert all(o.ok for o in recovered), recovered
    rest = [a.id for a in list_actions(ledger, states=["applied"])]
    if rest:
        assert all(o.ok for o in runner.release(rest))
    assert_restored(case.uri, case.original)
    assert {a.state for a in list_actions(ledger)} == {"released"}
    ledger.dispose()


def test_recover_rollback_undoes_an_interrupted_move(case: Any) -> None:
    fids = [str(f) for f in case.confirmed.values()]
    proc = run_cli(
        ["quarantine", "apply", *fids, "--mode", "move", "--yes", "--ledger", case.ledger_url], fault="apply:copy"
    )
    assert_killed(proc)
    now = snapshot(case.uri)
    (in_both,) = [p for p in POISONS if p in now[QUARANTINE]]
    assert in_both in now["docs"]  # killed between copy and delete: two copies, never zero
    done = run_cli(["quarantine", "recover", "--rollback", "--ledger", case.ledger_url])
    assert done.returncode == 0, done.stderr
    assert "rolled_back" in done.stdout
    assert_restored(case.uri, case.original)
