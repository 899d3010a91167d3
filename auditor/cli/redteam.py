"""``vecaudit redteam``: plant every attack class into a scratch copy of a collection and score the scan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from auditor.cli.options import config_option, format_option, info, is_quiet
from auditor.cli.output import emit_json, emit_table
from auditor.cli.scan import build_settings, select_detectors
from auditor.config import load_config
from auditor.engine import ScanOptions
from auditor.errors import ConfigError
from auditor.redteam.runner import report_document, run_redteam
from auditor.registry import detector_classes
from auditor.types import FieldMap


@click.command("redteam")
@click.argument("source", required=False)
@click.option("--collection", "-c", help="Collection to copy.")
@click.option("--vector", help="Named vector to copy.")
@click.option(
    "--into",
    "into",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("redteam-store"),
    show_default=True,
    help="Scratch folder for the copy (a local Qdrant store and its ledger).",
)
@click.option("--sample", type=click.IntRange(10), help="Copy a seeded random sample of N points.")
@click.option(
    "--per-class", type=click.IntRange(1, 1000), default=10, show_default=True, help="Attacks planted per class."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--text-field", help="Payload field holding the text (required).")
@click.option("--tenant-field", help="Payload field holding the tenant (enables tenancy attacks).")
@click.option("--detector", "-d", "detectors", multiple=True, metavar="NAME", help="Run only these detectors.")
@click.option("--skip", "skipped", multiple=True, metavar="NAME", help="Do not run this detector.")
@click.option("--model", help="Model that embeds planted texts (and re-embeds for tamper checks).")
@config_option
@format_option("table", "json")
def redteam_command(
    source: str | None,
    collection: str | None,
    vector: str | None,
    into: Path,
    sample: int | None,
    per_class: int,
    seed: int,
    text_field: str | None,
    tenant_field: str | None,
    detectors: tuple[str, ...],
    skipped: tuple[str, ...],
    model: str | None,
    config_path: str | None,
    fmt: str,
) -> None:
    """Measure what your scan configuration catches, on a copy of your own data.

    Copies the collection (never writing to it) into --into, records a baseline scan, plants poison clusters,
    hub passages, tampered vectors, cross-tenant copies, misfiled and unlabeled points, injected instructions,
    secrets and personal data, scans again with your configuration, and reports per attack class: planted,
    caught, missed, recall and precision. The generators are deterministic proxies of published attacks (see
    docs/redteam.md).

    \b
    Example:
      vecaudit redteam qdrant+local:///data/store --collection docs --text-field text --tenant-field tenant \\
          --sample 5000 --into /tmp/redteam --format json
    """
    from auditor.embedder import Embedder

    classes = detector_classes()
    config = load_config(config_path, known_detectors=set(classes))
    source = source or config.source
    collection = collection or config.collection
    if not source or not collection:
        raise ConfigError("redteam needs SOURCE and --collection (or `source`/`collection` in vecaudit.toml)")
    field_map = FieldMap(
        text=text_field or config.fields.get("text"),
        tenant=tenant_field or config.fields.get("tenant"),
        doc_id=config.fields.get("doc_id"),
        timestamp=config.fields.get("timestamp"),
    )
    settings = build_settings(
        config,
        model=model,
        device=None,
        embed_batch_size=None,
        embed_sample=None,
        tenants=None,
        probe=None,
        queries=None,
        seed=seed,
    )
    options = ScanOptions(field_map=field_map, settings=settings, show_progress=not is_quiet())
    embedder = Embedder(settings.model, device=settings.device, batch_size=settings.embed_batch_size)

    def embed(texts: list[str]) -> Any:
        return embedder.encode(texts)

    run = run_redteam(
        source,
        collection=collection,
        into=into,
        vector=vector or config.vector,
        detectors=lambda: select_detectors(classes, config, detectors, skipped),
        options=options,
        embed=embed,
        sample=sample,
        seed=seed,
        per_class=per_class,
    )
    doc = report_document(
        run.scores,
        run.plan,
        source=source,
        collection=collection,
        into=str(into),
        scan_id=run.result.scan_id,
        ledger=run.ledger_url,
        points=run.result.points_scanned,
    )
    if fmt == "json":
        emit_json(doc)
        return
    rows = []
    for attack, c in doc["classes"].items():
        prec = "-" if c["precision"] is None else f"{c['precision']:.2f}"
        det = ", ".join(f"{d}:{n}" for d, n in c["detectors"].items())
        rows.append([attack, c["planted"], c["caught"], c["missed"], f"{c['recall']:.2f}", prec, det])
    emit_table(rows, ["attack", "planted", "caught", "missed", "recall", "precision", "flagged by (any detector)"])
    for attack, c in doc["classes"].items():
        for m in c["missed_points"][:5]:
            info(f"  missed {attack}: point {m['point_id']} ({m['what']})")
    info(f"scratch copy and its ledger: {into} (inspect with --ledger {run.ledger_url})")


COMMANDS = [redteam_command]
