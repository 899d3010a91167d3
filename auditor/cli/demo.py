"""``vecaudit demo``: build the demo store, plant attacks, scan, show findings and what to try next."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

from auditor.cli.options import info, is_quiet
from auditor.cli.output import emit_table
from auditor.cli.scan import render_scan, scan_document, select_detectors
from auditor.config import Config
from auditor.context import ScanSettings
from auditor.engine import Scanner, ScanOptions, ScanResult
from auditor.ledger import Ledger
from auditor.redteam.runner import EXPECTED, score
from auditor.registry import connector_for, detector_classes
from auditor.report.html import write_report
from auditor.types import FieldMap

FIELD_MAP = FieldMap(text="text", tenant="tenant", doc_id="doc_id")


def _scan(store_uri: str, ledger: Ledger, quiet: bool) -> ScanResult:
    classes = detector_classes()
    detectors = select_detectors(classes, Config(), (), ())
    connector = connector_for(store_uri, collection="docs")
    try:
        opts = ScanOptions(
            field_map=FIELD_MAP, settings=ScanSettings(tenants=("acme", "globex", "initech")), show_progress=not quiet
        )
        return Scanner(ledger, connector, detectors, opts).run()
    finally:
        connector.close()


@click.command("demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-store"),
    show_default=True,
    help="Folder for the demo store and its ledger (recreated).",
)
def demo_command(directory: Path) -> None:
    """Build a local Qdrant store from real text, plant attacks, scan it and show the findings.

    \b
    Example:
      vecaudit demo && export VECAUDIT_LEDGER=sqlite:///demo-store/ledger.db && vecaudit findings list
    """
    from auditor import demo
    from auditor.embedder import Embedder

    started = time.monotonic()
    quiet = is_quiet()
    demo.prepare_dir(directory)
    embedder = Embedder()

    def embed(texts: list[str]) -> Any:
        return embedder.encode(texts, show_progress=len(texts) > 50 and not quiet)

    info(f"building the demo store in {directory}/qdrant from real text (3 tenants, bundled all-MiniLM-L6-v2)")
    store = demo.build_store(directory, embed)
    ledger = Ledger(store.ledger_url).open()
    baseline = _scan(store.uri, ledger, quiet)
    info(f"baseline scan {baseline.scan_id}: {baseline.points_scanned} points recorded in {directory}/ledger.db")
    planted = demo.plant_attacks(store, embed)
    counts = Counter(p.attack for p in planted)
    info("planted: " + ", ".join(f"{n} {a}" for a, n in sorted(counts.items())))
    result = _scan(store.uri, ledger, quiet)
    render_scan(ledger, result, "table")
    by_detector = Counter(r.finding.detector for r in result.findings)
    click.echo("")
    emit_table([[d, n] for d, n in sorted(by_detector.items())], ["detector", "findings"])
    planted_by_class: dict[str, list[Any]] = {}
    for p in planted:
        planted_by_class.setdefault(p.attack, []).append(p.point_id)
    scores = score(planted_by_class, result)
    click.echo("")
    emit_table(
        [[a, s.planted, s.caught, ", ".join(sorted(EXPECTED.get(a, ())))] for a, s in sorted(scores.items())],
        ["planted attack", "planted", "caught", "by"],
    )
    caught = sum(s.caught for s in scores.values())
    click.echo(f"\n{caught} of {len(planted)} planted points caught in {time.monotonic() - started:.0f}s")
    report = directory / "findings.json"
    _write_json_report(ledger, result, report)
    _quarantine_one(store.uri, ledger, planted, result, directory)
    html = directory / "report.html"
    write_report(ledger, result.scan_id, str(html))
    click.echo(f"\nreports written to {report} and {html}")
    click.echo(f"""
next steps:
  export VECAUDIT_LEDGER={store.ledger_url}
  vecaudit findings list --severity high
  vecaudit findings show {result.findings[0].row_id if result.findings else 1}
  vecaudit review
  vecaudit history {planted[0].point_id}
  vecaudit quarantine list
  vecaudit tenants --collection docs
  vecaudit scan {store.uri} --collection docs --text-field text --tenant-field tenant
  vecaudit redteam {store.uri} --collection docs --text-field text --tenant-field tenant --into {directory}-redteam""")
    ledger.dispose()


def _quarantine_one(
    store_uri: str, ledger: Ledger, planted: list[Any], result: ScanResult, directory: Path
) -> None:
    """End of the demo: confirm the findings on the planted poisons (else on one other caught plant),
    quarantine them in tag mode with encrypted ledger backups (the key in the environment, else a new
    ``quarantine.key`` in the demo folder), and show that a search guarded by
    ``auditor.guard.exclude_quarantined`` no longer returns them."""
    from qdrant_client import QdrantClient

    from auditor.backupcrypt import KEY_FILE_ENV, BackupKeys, new_key, write_key_file
    from auditor.guard import exclude_quarantined
    from auditor.ledger import repository as repo
    from auditor.quarantine import Quarantine, Selection, plan

    attack = {p.point_id: p.attack for p in planted}
    caught = [r for r in result.findings if r.finding.point_id in attack]
    chosen = [r for r in caught if attack[r.finding.point_id] == "poison"] or caught[:1]
    if not chosen:
        return
    with ledger.session() as s:
        for rec in chosen:
            repo.add_review(s, finding_id=rec.row_id, reviewer="demo", verdict="confirmed", note="planted by the demo")
    keys = BackupKeys.from_env()
    key_hint = ""
    if keys is None:
        key_file = directory / "quarantine.key"
        write_key_file(key_file, new_key())
        keys = BackupKeys.parse(key_file.read_text(encoding="ascii"), source=str(key_file))
        key_hint = f"\n  backups encrypted with {key_file}: export {KEY_FILE_ENV}={key_file} to release"
    selection = Selection(finding_ids=[r.row_id for r in chosen])
    outcomes = Quarantine(ledger, actor="demo", keys=keys).apply(plan(ledger, selection))
    quarantined = {o.point_id for o in outcomes if o.state == "applied"}
    pid: Any = chosen[0].finding.point_id
    client = QdrantClient(path=store_uri.removeprefix("qdrant+local://"))
    try:
        query: Any = client.retrieve("docs", [pid], with_vectors=True)[0].vector  # the query it was built to win
        plain = [p.id for p in client.query_points("docs", query=query, limit=5).points]
        guard = exclude_quarantined()
        guarded = [p.id for p in client.query_points("docs", query=query, query_filter=guard, limit=5).points]
    finally:
        client.close()

    def mark(ids: list[Any]) -> str:
        return ", ".join(f"{i}*" if i in quarantined else str(i) for i in ids)

    click.echo(
        f"""
quarantine: {len(chosen)} finding(s) confirmed, {len(quarantined)} point(s) quarantined (tag mode, * = quarantined)
  top 5 for point {pid}'s vector, unfiltered:      {mark(plain)}
  with query_filter=exclude_quarantined():  {mark(guarded)}
  vecaudit quarantine list   ·   vecaudit quarantine release --point {pid} --yes{key_hint}"""
    )


def _write_json_report(ledger: Ledger, result: ScanResult, path: Path) -> None:
    path.write_text(
        json.dumps(scan_document(ledger, result), indent=2, ensure_ascii=False, default=str), encoding="utf-8"
    )


COMMANDS = [demo_command]
