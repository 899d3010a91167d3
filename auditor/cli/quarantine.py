"""``vecaudit quarantine plan|apply|release|list|recover|keygen``: take confirmed findings' points out of
retrieval, and put them back."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from auditor.backupcrypt import KEY_ENV, KEY_FILE_ENV, key_id, new_key, write_key_file
from auditor.backupcrypt import describe as describe_backup
from auditor.cli.findings import reviewer_name
from auditor.cli.options import format_option, info, ledger_option, open_ledger, severity_type
from auditor.cli.output import emit_json, emit_table, iso, point_id_from_key, shorten
from auditor.errors import ConfigError, QuarantineError
from auditor.guard import DEFAULT_FLAG_FIELD
from auditor.ledger.models import QUARANTINE_STATES, QuarantineActionRow
from auditor.quarantine import Outcome, PlanItem, Quarantine, Selection, list_actions, plan
from auditor.types import Severity

F = TypeVar("F", bound=Callable[..., Any])


def selection_options(fn: F) -> F:
    for deco in reversed(
        [
            click.argument("finding_ids", type=int, nargs=-1),
            click.option("--scan", "scan_id", type=int, help="Findings that occurred in this scan."),
            click.option("--detector", "detectors", multiple=True, help="Findings of this detector (repeatable)."),
            click.option("--severity", type=severity_type(), help="Findings at or above this severity."),
            click.option(
                "--mode",
                type=click.Choice(["tag", "move"]),
                default="tag",
                show_default=True,
                help="tag: flag the payload (filter it out at retrieval); move: to <collection>__quarantine.",
            ),
            click.option(
                "--flag-field",
                default=DEFAULT_FLAG_FIELD,
                show_default=True,
                help="Payload key of the quarantine flag (tag mode).",
            ),
            click.option(
                "--force",
                is_flag=True,
                help="Also take open (unreviewed) findings, and points that changed since the scan.",
            ),
            ledger_option,
        ]
    ):
        fn = deco(fn)
    return fn


def _selection(
    finding_ids: tuple[int, ...], scan_id: int | None, detectors: tuple[str, ...], severity: str | None
) -> Selection:
    return Selection(
        finding_ids=finding_ids,
        scan_id=scan_id,
        detectors=detectors,
        severity=Severity.parse(severity) if severity else None,
    )


def _plan_doc(item: PlanItem) -> dict[str, Any]:
    return {
        "collection": item.collection,
        "point_id": item.point_id,
        "finding_ids": item.finding_ids,
        "rule_ids": sorted(set(item.rule_ids)),
        "mode": item.mode,
        "target": item.target,
        "flag_field": item.flag_field if item.mode == "tag" else None,
        "change": None if item.skip else item.change,
        "skip": item.skip,
        "existing_action": item.existing_action,
    }


def _emit_plan(items: Sequence[PlanItem], fmt: str) -> None:
    if fmt == "json":
        emit_json({"version": 1, "plan": [_plan_doc(i) for i in items]})
        return
    if not items:
        info("no findings match")
        return
    emit_table(
        [
            [
                i.collection,
                str(i.point_id),
                ",".join(map(str, i.finding_ids)),
                ",".join(sorted(set(i.rule_ids))),
                shorten(i.change, 70),
            ]
            for i in items
        ],
        ["collection", "point", "findings", "rules", "change"],
    )


def _outcome_doc(o: Outcome) -> dict[str, Any]:
    return {
        "action_id": o.action_id,
        "collection": o.collection,
        "point_id": o.point_id,
        "state": o.state,
        "ok": o.ok,
        "message": o.message,
        "notes": o.notes,
    }


def _emit_outcomes(outcomes: Sequence[Outcome], fmt: str) -> None:
    if fmt == "json":
        emit_json({"version": 1, "actions": [_outcome_doc(o) for o in outcomes]})
    elif outcomes:
        emit_table(
            [
                ["" if o.action_id is None else o.action_id, str(o.point_id), o.state, shorten(o.message, 80)]
                for o in outcomes
            ],
            ["action", "point", "state", "message"],
        )
    for o in outcomes:
        if not o.ok:  # the table shortens messages; the reason for a failure must be readable in full
            click.echo(f"point {o.point_id} (action {o.action_id}): {o.message}", err=True)
        for note in o.notes:
            info(f"note (action {o.action_id}): {note}")


def _exit_for(outcomes: Sequence[Outcome]) -> None:
    failed = [o for o in outcomes if not o.ok]
    if failed:
        click.echo(f"{len(failed)} of {len(outcomes)} point(s) not done; see the messages above", err=True)
        click.get_current_context().exit(QuarantineError.exit_code)


@click.group("quarantine")
def quarantine_group() -> None:
    """Take the points of confirmed findings out of retrieval, and put them back.

    The full point (every vector, bit-exact, and the payload) is committed to the ledger before the store is
    touched, encrypted with the key in VECAUDIT_QUARANTINE_KEY or VECAUDIT_QUARANTINE_KEY_FILE when one is set
    (`vecaudit quarantine keygen`); without a key, points holding secrets or personal data are refused. An
    interrupted run is finished by re-running it or by `vecaudit quarantine recover`.
    """


@quarantine_group.command("plan")
@selection_options
@format_option("table", "json")
def plan_command(
    finding_ids: tuple[int, ...],
    scan_id: int | None,
    detectors: tuple[str, ...],
    severity: str | None,
    mode: str,
    flag_field: str,
    force: bool,
    ledger_url: str | None,
    fmt: str,
) -> None:
    """Show what quarantine would change, per point (reads the ledger only).

    \b
    Example:
      vecaudit quarantine plan --scan 3 --severity high
      vecaudit quarantine plan 12 14 --mode move
    """
    ledger = open_ledger(ledger_url)
    items = plan(
        ledger, _selection(finding_ids, scan_id, detectors, severity), mode=mode, flag_field=flag_field, force=force
    )
    _emit_plan(items, fmt)


@quarantine_group.command("apply")
@selection_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (non-interactive use).")
@click.option("--dry-run", is_flag=True, help="Check each point in the store (fingerprint) but write nothing.")
@click.option("--source", metavar="URI", help="Store URI when the ledger's (credentials redacted) is not usable.")
@click.option("--actor", help="Who applies it, for the audit trail [OS user].")
@format_option("table", "json")
def apply_command(
    finding_ids: tuple[int, ...],
    scan_id: int | None,
    detectors: tuple[str, ...],
    severity: str | None,
    mode: str,
    flag_field: str,
    force: bool,
    ledger_url: str | None,
    yes: bool,
    dry_run: bool,
    source: str | None,
    actor: str | None,
    fmt: str,
) -> None:
    """Quarantine the points of confirmed findings (open ones too with --force).

    A point whose vector, text or payload changed since the scan is refused unless --force.
    Exit 0 when every selected point is quarantined (or already was), 3 when any is not.

    \b
    Example:
      vecaudit quarantine apply 12 --yes
      vecaudit quarantine apply --detector poison-cluster --severity high --mode move --yes
    """
    ledger = open_ledger(ledger_url)
    items = plan(
        ledger, _selection(finding_ids, scan_id, detectors, severity), mode=mode, flag_field=flag_field, force=force
    )
    todo = [i for i in items if not i.skip]
    if not todo:
        _emit_plan(items, fmt)
        info("nothing to quarantine")
        return
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            raise ConfigError("quarantine apply writes to the store", hint="confirm with --yes (or use --dry-run)")
        _emit_plan(items, "table")
        click.confirm(f"quarantine {len(todo)} point(s) ({mode} mode)?", abort=True, err=True)
    runner = Quarantine(ledger, actor=reviewer_name(actor), source=source)
    outcomes = runner.apply(items, force=force, dry_run=dry_run)
    _emit_outcomes(outcomes, fmt)
    for warning in runner.warnings:
        click.echo(f"warning: {warning}", err=True)
    _exit_for(outcomes)


@quarantine_group.command("release")
@click.argument("action_ids", type=int, nargs=-1)
@click.option("--point", "point_id", help="Release every quarantine action on this point id.")
@click.option("--force", is_flag=True, help="Release even if the point changed while quarantined (tag mode).")
@click.option(
    "--purge-backup",
    is_flag=True,
    help="Erase the backup from the ledger once the point is verified back bit for bit (hashes stay). "
    "Also purges actions released earlier whose live point still equals the backup (with --force: any).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--source", metavar="URI", help="Store URI when the ledger's (credentials redacted) is not usable.")
@click.option("--actor", help="Who releases it, for the audit trail [OS user].")
@ledger_option
@format_option("table", "json")
def release_command(
    action_ids: tuple[int, ...],
    point_id: str | None,
    force: bool,
    purge_backup: bool,
    yes: bool,
    source: str | None,
    actor: str | None,
    ledger_url: str | None,
    fmt: str,
) -> None:
    """Put quarantined points back exactly as they were (same id, vectors and payload, flag removed).

    Each point is read back from the reopened store; a vector the store did not give back bit for bit is
    named in a note with its distance in ulps (the ledger backup stays exact). Encrypted backups need the key
    they were made with.

    \b
    Example:
      vecaudit quarantine release 5
      vecaudit quarantine release --point 42 --yes --purge-backup
    """
    ledger = open_ledger(ledger_url)
    if not action_ids and point_id is None:
        raise ConfigError("nothing to release", hint="give ACTION_ID... or --point ID (`vecaudit quarantine list`)")
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError("quarantine release writes to the store", hint="confirm with --yes")
        click.confirm("release the selected quarantine action(s)?", abort=True, err=True)
    runner = Quarantine(ledger, actor=reviewer_name(actor), source=source)
    outcomes = runner.release(action_ids, point=point_id, force=force, purge_backup=purge_backup)
    _emit_outcomes(outcomes, fmt)
    _exit_for(outcomes)


@quarantine_group.command("recover")
@click.option("--rollback", is_flag=True, help="Undo interrupted applies instead of finishing them.")
@click.option("--source", metavar="URI", help="Store URI when the ledger's (credentials redacted) is not usable.")
@click.option("--actor", help="Who recovers, for the audit trail [OS user].")
@ledger_option
@format_option("table", "json")
def recover_command(rollback: bool, source: str | None, actor: str | None, ledger_url: str | None, fmt: str) -> None:
    """Finish (or with --rollback undo) every quarantine action a crash or kill interrupted.

    Interrupted releases always finish: restoring the original point is the safe direction.

    \b
    Example:
      vecaudit quarantine recover
    """
    ledger = open_ledger(ledger_url)
    runner = Quarantine(ledger, actor=reviewer_name(actor), source=source)
    outcomes = runner.recover(rollback=rollback)
    if not outcomes:
        info("no interrupted quarantine actions")
    _emit_outcomes(outcomes, fmt)
    _exit_for(outcomes)


def action_doc(a: QuarantineActionRow) -> dict[str, Any]:
    return {
        "action_id": a.id,
        "point_id": point_id_from_key(a.point_key),
        "collection_id": a.collection_id,
        "mode": a.mode,
        "state": a.state,
        "finding_ids": a.finding_ids,
        "reason": a.reason,
        "target": a.target,
        "flag_field": a.flag_field,
        "actor": a.actor,
        "created_at": iso(a.created_at),
        "applied_at": iso(a.applied_at),
        "released_by": a.released_by,
        "released_at": iso(a.released_at),
        "error": a.error,
        "backup": describe_backup(a.backup),
    }


@quarantine_group.command("list")
@click.option("--state", "states", multiple=True, type=click.Choice(QUARANTINE_STATES), help="Only this state.")
@click.option("--point", "point_id", help="Only actions on this point id.")
@ledger_option
@format_option("table", "json")
def list_command(states: tuple[str, ...], point_id: str | None, ledger_url: str | None, fmt: str) -> None:
    """Quarantine actions, newest first: who, when, why (findings), mode, state, release.

    \b
    Example:
      vecaudit quarantine list --state applied
    """
    ledger = open_ledger(ledger_url)
    docs = [action_doc(a) for a in list_actions(ledger, states=states or None, point=point_id)]
    if fmt == "json":
        emit_json({"version": 1, "actions": docs})
        return
    if not docs:
        info("no quarantine actions")
        return
    emit_table(
        [
            [
                d["action_id"],
                str(d["point_id"]),
                d["mode"],
                d["state"],
                ",".join(map(str, d["finding_ids"] or [])),
                d["actor"],
                (d["applied_at"] or d["created_at"] or "")[:19],
                d["released_by"] or "",
                d["backup"],
                shorten(d["error"] or "", 40),
            ]
            for d in docs
        ],
        ["action", "point", "mode", "state", "findings", "by", "when (UTC)", "released by", "backup", "error"],
    )


@quarantine_group.command("keygen")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the key to this new file (mode 0600) instead of printing it; an existing file is never replaced.",
)
def keygen_command(out: Path | None) -> None:
    """Create a key for encrypting quarantine backups (Fernet: AES-128-CBC with HMAC-SHA256).

    Without the key, encrypted backups cannot be restored: keep it outside the ledger's database and its
    backups. To rotate, put the new key first and keep the old one after it, comma-separated, until every
    action encrypted with the old one is released and purged.

    \b
    Example:
      vecaudit quarantine keygen --out ~/.config/vecaudit/quarantine.key
      export VECAUDIT_QUARANTINE_KEY_FILE=~/.config/vecaudit/quarantine.key
    """
    key = new_key()
    if out is None:
        click.echo(key.decode("ascii"))
        info(f"key id {key_id(key)}; export {KEY_ENV}=<this key> (or keep it in a file for {KEY_FILE_ENV})")
        return
    write_key_file(out, key)
    info(f"wrote key {key_id(key)} to {out} (mode 0600); export {KEY_FILE_ENV}={out.resolve()}")


COMMANDS = [quarantine_group]
