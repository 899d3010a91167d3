"""``vecaudit calibration show|reset``: the alert lines a collection's false_positive verdicts set, and undoing
them (see auditor.calibration)."""

from __future__ import annotations

from typing import Any

import click

from auditor import calibration
from auditor.cli.findings import reviewer_name
from auditor.cli.options import format_option, info, ledger_option, open_ledger
from auditor.cli.output import emit_json, emit_table, iso
from auditor.errors import ConfigError
from auditor.ledger import repository as repo


@click.group("calibration")
def calibration_group() -> None:
    """Review-driven alert lines per collection and rule: show them, reset them."""


@calibration_group.command("show")
@ledger_option
@click.option("--collection", help="Only this collection (name or key).")
@format_option("table", "json")
def show_command(ledger_url: str | None, collection: str | None, fmt: str) -> None:
    """What the next scan of each collection will use: per rule, the false_positive verdicts counted (those
    given after the last reset), the confirmed findings, and the alert line (findings of the rule scoring at
    or below it are kept as LOW). A rule needs at least the documented minimum of false_positive verdicts.

    \b
    Example:
      vecaudit calibration show --collection docs
    """
    ledger = open_ledger(ledger_url)
    entries: list[dict[str, Any]] = []
    with ledger.session() as s:
        for coll in repo.collections_named(s, collection):
            for cal in calibration.rule_calibrations(s, coll.id).values():
                entries.append({"collection": coll.name, "collection_key": coll.key, "rule_id": cal.rule_id,
                                "detector": cal.detector, **cal.as_config(), "description": cal.describe()})
    if fmt == "json":
        emit_json({"version": 1, "min_false_positives": calibration.MIN_FALSE_POSITIVES, "calibrations": entries})
        return
    if not entries:
        info("no false_positive verdicts to calibrate from" + (f" in collection {collection!r}" if collection else ""))
        return
    rows = [
        [
            e["collection"], e["rule_id"], e["detector"], e["false_positives"], e["confirmed"],
            f"{e['highest_false_positive']:.4g}",
            "-" if e["lowest_confirmed"] is None else f"{e['lowest_confirmed']:.4g}",
            f"needs {calibration.MIN_FALSE_POSITIVES}" if e["alert_above"] is None else f"{e['alert_above']:.4g}",
        ]
        for e in entries
    ]
    emit_table(rows, ("collection", "rule", "detector", "false_pos", "confirmed", "highest fp", "lowest conf",
                      "alerts above"))


@calibration_group.command("reset")
@ledger_option
@click.option("--collection", help="Only this collection (name or key) [every collection].")
@click.option("--rule", "rule_id", help="Only this rule id [every rule].")
@click.option("--reviewer", help="Who resets [OS user].")
def reset_command(ledger_url: str | None, collection: str | None, rule_id: str | None, reviewer: str | None) -> None:
    """Forget the false_positive verdicts given so far when calibrating: the next scan alerts at the rule's
    own thresholds again. The verdicts themselves stay (the findings stay false_positive and silenced);
    later verdicts calibrate afresh.

    \b
    Example:
      vecaudit calibration reset --collection docs --rule VA322
    """
    ledger = open_ledger(ledger_url)
    who = reviewer_name(reviewer)
    with ledger.session() as s:
        colls = repo.collections_named(s, collection)
        if not colls:
            raise ConfigError(
                f"no collection {collection!r} in the ledger" if collection else "the ledger holds no collection",
                hint="see `vecaudit scans list`",
            )
        done = []
        for coll in colls:
            row = calibration.reset(s, coll.id, rule_id=rule_id, actor=who)
            done.append(f"{coll.name} at {iso(row.created_at)}")
    info(f"calibration reset ({rule_id or 'every rule'}) by {who}: {', '.join(done)}")


COMMANDS = [calibration_group]
