"""``vecaudit scan``: audit one collection into the ledger; findings table or JSON; CI exit codes."""

from __future__ import annotations

import atexit
import functools
import gc
from typing import Any

import click

from auditor.alerting import ALERT_MODES, DEFAULT_ALERT_ON
from auditor.cli.options import (
    config_option,
    format_option,
    info,
    is_quiet,
    ledger_option,
    resolve_ledger_url,
    severity_type,
)
from auditor.cli.output import (
    FINDING_HEADERS,
    emit_json,
    emit_table,
    finding_json,
    finding_rows_from_json,
    scan_json,
)
from auditor.config import ENGINE_KINDS, Config, check_embed_sample, load_config
from auditor.connector import Connector
from auditor.context import ScanSettings
from auditor.detector import Detector
from auditor.engine import Scanner, ScanOptions, ScanResult
from auditor.errors import ConfigError, ExitCode
from auditor.ledger import Ledger
from auditor.ledger import repository as repo
from auditor.ledger.models import ScanRow
from auditor.masking import redact_text
from auditor.registry import connector_for, detector_classes
from auditor.types import FieldMap, Severity


def select_detectors(
    classes: dict[str, type[Detector]], config: Config, chosen: tuple[str, ...], skipped: tuple[str, ...]
) -> list[Detector]:
    """Detectors for this scan: ``--detector`` (or the config's ``enable``), else every default one;
    minus ``--skip``/``disable``; parameters from ``[detectors.NAME]``."""
    for name in (*chosen, *skipped):
        if name not in classes:
            raise ConfigError(f"unknown detector {name!r}", hint=f"known: {', '.join(sorted(classes))}")
    if chosen:
        names = list(dict.fromkeys(chosen))
    elif config.detectors_enable is not None:
        names = list(config.detectors_enable)
    else:
        names = [n for n, c in classes.items() if c.enabled_by_default]
    drop = set(skipped) | set(config.detectors_disable)
    return [classes[n](**config.detector_params.get(n, {})) for n in names if n not in drop]


def build_settings(config: Config, **flags: Any) -> ScanSettings:
    emb, ten = config.embedding, config.tenancy
    tenants = flags["tenants"]
    tenant_list = [t for t in tenants.split(",")] if tenants else ten.get("tenants")
    sample = flags["embed_sample"] if flags["embed_sample"] is not None else emb.get("sample")
    extra: dict[str, Any] = {}
    queries = flags["queries"] or config.hub.get("queries")
    if queries:
        extra["queries_file"] = queries
    if ten.get("markers"):
        extra["tenant_markers"] = ten["markers"]
    if ten.get("probe_filter"):
        extra["probe_filter"] = ten["probe_filter"]
    return ScanSettings(
        model=flags["model"] or emb.get("model"),
        device=flags["device"] or emb.get("device"),
        embed_batch_size=flags["embed_batch_size"] or emb.get("batch_size") or 64,
        embed_sample=None if sample is None else str(sample),
        tenants=tuple(tenant_list) if tenant_list else None,
        probe=bool(flags["probe"] or ten.get("probe", False)),
        seed=flags["seed"],
        extra=extra,
    )


@click.command("scan")
@click.argument("source", required=False)
@click.option("--collection", "-c", help="Collection (table) to audit.")
@click.option("--vector", help="Named vector to audit (collections with several named vectors).")
@click.option("--text-field", help="Payload field holding the chunk text (dotted paths allowed).")
@click.option("--tenant-field", help="Payload field holding the tenant label.")
@click.option("--doc-id-field", help="Payload field holding the source document id.")
@click.option("--timestamp-field", help="Payload field holding the ingestion time.")
@click.option(
    "--detector",
    "-d",
    "detectors",
    multiple=True,
    metavar="NAME",
    help="Run only these detectors (repeatable; `vecaudit plugins list` names them).",
)
@click.option("--skip", "skipped", multiple=True, metavar="NAME", help="Do not run this detector (repeatable).")
@config_option
@ledger_option
@click.option(
    "--fail-on", type=severity_type(), help="Exit 1 when active findings reach this severity [default: high]."
)
@click.option("--exit-zero", is_flag=True, help="Exit 0 even with findings (errors still exit non-zero).")
@format_option("table", "json")
@click.option("--batch-size", type=click.IntRange(1, 100_000), help="Points per page read from the store [512].")
@click.option("--grpc", is_flag=True, default=None, help="Qdrant server: prefer gRPC (port 6334).")
@click.option("--model", help="sentence-transformers model name or path for re-embedding [bundled all-MiniLM-L6-v2].")
@click.option("--device", help="Embedding device: cpu, cuda, cuda:0 ... [auto].")
@click.option("--embed-batch-size", type=click.IntRange(1, 4096), help="Texts per embedding batch [64].")
@click.option(
    "--embed-sample",
    metavar="N|FRACTION|all",
    callback=lambda _ctx, _param, value: None if value is None else check_embed_sample(value),
    help="How many points to re-embed [10000].",
)
@click.option("--tenants", metavar="A,B,C", help="The declared set of tenant labels.")
@click.option("--probe", is_flag=True, default=None, help="Run live tenant-isolation probes (filtered searches).")
@click.option(
    "--queries", type=click.Path(exists=True, dir_okay=False), help="File of queries, one per line (hub detector)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for sampling.")
@click.option(
    "--incremental",
    is_flag=True,
    help="Re-examine only points new or changed since the last completed scan; reuse its graph and re-embeddings.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    help="Where --incremental keeps neighbour graphs and re-embeddings [$VECAUDIT_STATE_DIR or ~/.cache/vecaudit].",
)
@click.option("--notify", "notify_url", metavar="URL", help="POST a JSON summary of new findings to this webhook.")
@click.option(
    "--alert-on",
    type=click.Choice(ALERT_MODES),
    help="After the baseline scan, which findings alert (exit code, --notify): 'changed' = HIGH, or MEDIUM about a "
    "point new or changed since the last scan; 'all' = every active finding [default: changed].",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINE_KINDS),
    help="Where the scan runs: 'inprocess' (this process) or 'ray' (a Ray cluster: pass 1 and re-embedding on "
    'workers; needs `pip install "vecaudit[ray]"`) [default: inprocess, or [engine] kind].',
)
@click.option(
    "--ray-address",
    metavar="ADDRESS",
    help="Ray cluster to join with --engine ray ('auto', 'ray://head:10001'); a local cluster when not given.",
)
@click.option(
    "--no-calibration",
    is_flag=True,
    help="Ignore the collection's review-driven alert lines for this scan (`vecaudit calibration show`).",
)
@click.pass_context
def scan_command(
    ctx: click.Context,
    source: str | None,
    collection: str | None,
    vector: str | None,
    text_field: str | None,
    tenant_field: str | None,
    doc_id_field: str | None,
    timestamp_field: str | None,
    detectors: tuple[str, ...],
    skipped: tuple[str, ...],
    config_path: str | None,
    ledger_url: str | None,
    fail_on: str | None,
    exit_zero: bool,
    fmt: str,
    batch_size: int | None,
    grpc: bool | None,
    incremental: bool,
    state_dir: str | None,
    notify_url: str | None,
    alert_on: str | None,
    no_calibration: bool,
    engine: str | None,
    ray_address: str | None,
    **flags: Any,
) -> None:
    """Scan one collection: integrity, provenance, poisoning, tampering, injection, secrets, tenancy.

    SOURCE is a store URI: qdrant+local:///path, qdrant://host:6333, qdrants://host, chroma:///path,
    pgvector://user@host/db?table=t, milvus:///file.db, lancedb:///path?table=t, file:///export.parquet.
    Scans never write to the store. Exit codes: 0 clean, 1 alerting findings at/above --fail-on, 2 usage,
    3 scan incomplete, 4 ledger, 130 interrupted. After the first (baseline) scan of a collection, only HIGH
    findings and MEDIUM ones about points new or changed since the last scan alert (--alert-on all: every one).

    \b
    Example:
      vecaudit scan qdrant+local:///data/store --collection docs --text-field text --tenant-field tenant
      vecaudit scan --config vecaudit.toml --format json --fail-on medium > scan.json
      vecaudit scan qdrant://qdrant:6333 -c docs --text-field text --alert-on all --fail-on medium
      vecaudit scan file:///data/export/*.parquet -c docs --engine ray --ray-address auto
    """
    classes = detector_classes()
    config = load_config(config_path, known_detectors=set(classes))
    source = source or config.source
    if not source:
        raise ConfigError(
            "no store to scan", hint="give SOURCE (e.g. qdrant+local:///path) or `source` in vecaudit.toml"
        )
    fields = config.fields
    field_map = FieldMap(
        text=text_field or fields.get("text"),
        tenant=tenant_field or fields.get("tenant"),
        doc_id=doc_id_field or fields.get("doc_id"),
        timestamp=timestamp_field or fields.get("timestamp"),
    )
    threshold = Severity.parse(fail_on or config.fail_on or "high")
    dets = select_detectors(classes, config, detectors, skipped)
    settings = build_settings(config, **flags)
    options: dict[str, Any] = {}
    if grpc if grpc is not None else config.grpc:
        options["grpc"] = True
    # the URI is checked (no I/O) before the ledger is opened, so a mistyped URI leaves no ledger file behind
    connector = connector_for(
        source, collection=collection or config.collection, vector=vector or config.vector, options=options
    )
    ray_options = engine_options(config, engine, ray_address, connector)  # before the ledger: usage errors first
    try:
        ledger = Ledger(resolve_ledger_url(ledger_url, config)).open()
        scan_opts = ScanOptions(
            field_map=field_map,
            settings=settings,
            batch_size=batch_size or config.batch_size or 512,
            show_progress=not is_quiet(),
            incremental=incremental,
            state_dir=state_dir or config.state_dir,
            notify_url=notify_url,
            alert_on=alert_on or config.alert_on or DEFAULT_ALERT_ON,
            calibration_min_false_positives=None if no_calibration else ScanOptions.calibration_min_false_positives,
        )
        if ray_options is None:
            result = Scanner(ledger, connector, dets, scan_opts).run()
        else:
            from auditor.ray_engine import RayScanner

            result = RayScanner(ledger, connector, dets, scan_opts, ray_options).run()
    finally:
        connector.close()
    render_scan(ledger, result, fmt)
    code = result.exit_code(threshold)
    if exit_zero and code == ExitCode.FINDINGS:
        code = ExitCode.CLEAN
    ledger.dispose()
    skip_final_collection()
    ctx.exit(code)


@functools.cache
def skip_final_collection() -> None:
    """Freeze the garbage collector when the interpreter exits (``gc.freeze`` registered last, so it is the first
    exit handler to run: the others then run as before).

    Why: after a scan the interpreter's own shutdown ran the cyclic collector over everything the scan left
    (detector state, point lists, SQLAlchemy objects) and took 0.5-0.7 s of a 100k-point scan's ~15 s before the
    process ended (benchmarks/results/in-process-speed.md); the memory goes back with the process anyway.
    Objects are still freed by reference count, and the other exit handlers (logging, temporary files) still run.
    Registered at most once per process; an in-process caller (tests) is not affected until it exits."""
    atexit.register(gc.freeze)


def engine_options(config: Config, engine: str | None, address: str | None, connector: Connector) -> Any:
    """The Ray engine's options when the scan runs on Ray (``--engine ray`` or ``[engine] kind = "ray"``), else None.
    A missing ``ray`` package, ``--ray-address`` without the Ray engine, or a URI carrying a key are usage errors."""
    section = config.engine
    kind = engine or section.get("kind") or "inprocess"
    if kind != "ray":
        if address:
            raise ConfigError("--ray-address is only used by the Ray engine", hint="add --engine ray")
        return None
    from auditor.ray_engine import RayOptions, require_ray, task_uri

    require_ray()
    task_uri(connector)
    return RayOptions(
        address=address or section.get("address"),
        workers=section.get("workers"),
        gpus_per_embedder=float(section.get("gpus_per_embedder", 0)),
        graph=section.get("graph", "auto"),
    )


def scan_document(ledger: Ledger, result: ScanResult) -> dict[str, Any]:
    """The versioned JSON document of one scan: ``{"version": 1, "scan": {...}, "findings": [...]}``."""
    with ledger.session() as s:
        scan = s.get(ScanRow, result.scan_id)
        assert scan is not None
        findings = []
        # two SELECTs per 500 findings, not two per finding (11,700 findings at 1M points)
        ids = [rec.row_id for rec in result.findings]
        rows = repo.findings_by_id(s, ids)
        occurrences = repo.latest_occurrences(s, ids, result.scan_id)
        for rec in result.findings:
            row = rows.get(rec.row_id)
            assert row is not None
            occ = occurrences.get(rec.row_id)
            findings.append(
                {
                    **finding_json(row, occ, collection=scan.collection_name),
                    "is_new": rec.is_new,
                    "alert": rec.alert,
                    "alert_reason": redact_text(rec.alert_reason),  # it quotes point ids
                }
            )
        return {"version": 1, "scan": scan_json(scan), "findings": findings}


def render_scan(ledger: Ledger, result: ScanResult, fmt: str) -> None:
    """Print the scan's findings (table or the versioned JSON document) and a summary on stderr."""
    doc = scan_document(ledger, result)
    if fmt == "json":
        emit_json(doc)
    elif doc["findings"]:
        order = sorted(doc["findings"], key=lambda f: (-Severity(f["severity"]).rank, f["rule_id"], f["id"]))
        rows = [
            [*row, "yes" if f["alert"] else "-"] for row, f in zip(finding_rows_from_json(order), order, strict=True)
        ]
        emit_table(rows, (*FINDING_HEADERS, "alert"))
    info(_summary_line(doc, result))
    for note in result.notes:
        info(f"  note: {redact_text(note)}")
    if result.error:
        click.echo(f"error: scan {result.status}: {redact_text(result.error)}", err=True)


def _summary_line(doc: dict[str, Any], result: ScanResult) -> str:
    c = result.counts
    by_sev = c.get("by_severity", {})
    sev = ", ".join(
        f"{by_sev[s.value]} {s.value}" for s in sorted(Severity, key=lambda s: -s.rank) if by_sev.get(s.value)
    )
    if c.get("baseline"):
        change = "first scan of this collection: baseline recorded"
    elif "new" in c:
        change = f"{c['new']} new, {c['changed']} changed, {c['deleted']} deleted since the last scan"
    else:
        change = "no provenance recorded"
    alerts = c.get("alerts")
    alerting = (
        f"; {alerts['alerting']} alerting, {alerts['quiet']} listed without alerting (--alert-on {alerts['alert_on']})"
        if alerts
        else ""
    )
    return (
        f"scan {result.scan_id} {result.status}: {result.points_scanned} points of {doc['scan']['collection']}; "
        f"{c.get('findings', 0)} findings ({sev or 'none'}); {change}{alerting}"
    )


COMMANDS = [scan_command]
