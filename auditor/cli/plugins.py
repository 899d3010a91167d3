"""``vecaudit plugins list``: installed connectors and detectors (built-ins and third-party alike)."""

from __future__ import annotations

import click

from auditor.cli.options import format_option
from auditor.cli.output import emit_json, emit_table
from auditor.registry import CONNECTOR_GROUP, plugins


@click.group("plugins")
def plugins_group() -> None:
    """Registered plugins (entry points vecaudit.connectors and vecaudit.detectors)."""


@plugins_group.command("list")
@format_option("table", "json")
def list_command(fmt: str) -> None:
    """List connectors (with URI schemes) and detectors (with rule ids).

    \b
    Example:
      vecaudit plugins list
    """
    rows = []
    for p in plugins():
        kind = "connector" if p.group == CONNECTOR_GROUP else "detector"
        obj = p.loaded
        if obj is None:
            detail, status = p.error or "", "not loadable"
        elif kind == "connector":
            detail, status = ", ".join(f"{s}://" for s in obj.schemes), "ok"
        else:
            rules = ", ".join(r.id for r in obj.rules)
            detail = f"{rules}" + ("" if obj.enabled_by_default else " (opt-in)")
            status = "ok"
        rows.append({"kind": kind, "name": p.name, "target": p.target, "status": status, "detail": detail})
    if fmt == "json":
        emit_json({"version": 1, "plugins": rows})
    else:
        emit_table(
            [[r["kind"], r["name"], r["status"], r["detail"]] for r in rows], ["kind", "name", "status", "detail"]
        )


COMMANDS = [plugins_group]
