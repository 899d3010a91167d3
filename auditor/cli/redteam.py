"""``vecaudit redteam``: plant every attack class into a scratch copy of a collection and score the scan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from auditor.cli.options import config_option, format_option, info, is_quiet
from auditor.cli.output import emit_json, emit_table
from auditor.cli.scan import build_settings, select_detectors
from auditor.config import load_config
from auditor.engine import ScanOptions
from auditor.errors import ConfigError
from auditor.redteam.adversarial import ADVERSARIAL_CLASSES, AdversarialOptions
from auditor.redteam.generators import CLASS_GROUPS
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
@click.option(
    "--classes",
    "class_lists",
    multiple=True,
    metavar="LIST",
    help="Comma-separated attack classes to plant (repeatable): classic (default), adversarial, all, or any of "
    + ", ".join(CLASS_GROUPS)
    + ".",
)
@click.option(
    "--steps",
    type=click.IntRange(1, 10_000),
    help="Optimisation steps of the gradient attacks [10 white-box, 30 GASLITE / corpus poisoning]; ~1-2 s each "
    "on a CPU.",
)
@click.option(
    "--foreign-texts",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Other-language documents for the foreign class: JSONL with a 'text' field, or one text per line.",
)
@click.option(
    "--foreign-count",
    type=click.IntRange(1, 10_000),
    default=50,
    show_default=True,
    help="Documents in the planted foreign-language cluster.",
)
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
    class_lists: tuple[str, ...],
    steps: int | None,
    foreign_texts: Path | None,
    foreign_count: int,
    config_path: str | None,
    fmt: str,
) -> None:
    """Measure what your scan configuration catches, on a copy of your own data.

    Copies the collection (never writing to it) into --into, records a baseline scan, plants poison clusters,
    hub passages, tampered vectors, cross-tenant copies, misfiled and unlabeled points, injected instructions,
    secrets and personal data; with --classes adversarial (or all) also passages optimised against the embedding
    model (white-box PoisonedRAG prefixes, GASLITE and corpus-poisoning triggers: gradient attacks, minutes on a
    CPU), typo-perturbed documents, counterfactual twins and, with --foreign-texts, a foreign-language cluster;
    scans again with your configuration, and reports per attack class: planted, caught, missed, recall and
    precision. The generators are deterministic (see docs/redteam.md for how each relates to its paper).

    \b
    Example:
      vecaudit redteam qdrant+local:///data/store --collection docs --text-field text --tenant-field tenant \\
          --sample 5000 --into /tmp/redteam --format json
      vecaudit redteam qdrant+local:///data/store -c docs --text-field text --classes all \\
          --foreign-texts other-language.jsonl --steps 20
    """
    from auditor.embedder import Embedder

    detectors_known = detector_classes()
    config = load_config(config_path, known_detectors=set(detectors_known))
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
    classes = attack_classes(class_lists, foreign_texts)
    adversarial = AdversarialOptions(
        frozenset(ADVERSARIAL_CLASSES) & classes,
        steps=steps,
        foreign_texts=read_texts(foreign_texts) if foreign_texts else (),
        foreign_count=foreign_count,
        model=settings.model,
        show_progress=not is_quiet(),
    )
    embedder = Embedder(settings.model, device=settings.device, batch_size=settings.embed_batch_size)

    def embed(texts: list[str]) -> Any:
        return embedder.encode(texts)

    run = run_redteam(
        source,
        collection=collection,
        into=into,
        vector=vector or config.vector,
        detectors=lambda: select_detectors(detectors_known, config, detectors, skipped),
        options=options,
        embed=embed,
        sample=sample,
        seed=seed,
        per_class=per_class,
        classes=classes,
        adversarial=adversarial,
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


#: Names ``--classes`` takes besides single classes: ``classic`` (the default: the classes planted before issue
#: 16, about a minute), ``adversarial`` (the issue-16 classes; gradient ones take minutes on a CPU), ``all``.
CLASS_ALIASES = ("classic", "adversarial", "all")


def attack_classes(lists: tuple[str, ...], foreign_texts: Path | None) -> frozenset[str]:
    """The ``--classes`` named (comma-separated, repeatable; aliases expanded; none = ``classic``); ``foreign``
    through an alias only when other-language texts are given."""
    names = [n.strip() for item in lists for n in item.split(",") if n.strip()] or ["classic"]
    unknown = sorted(set(names) - set(CLASS_GROUPS) - set(CLASS_ALIASES))
    if unknown:
        raise ConfigError(
            f"unknown attack class {unknown[0]!r}", hint="use one of: " + ", ".join((*CLASS_ALIASES, *CLASS_GROUPS))
        )
    if "foreign" in names and foreign_texts is None:
        raise ConfigError("the foreign class needs other-language documents", hint="add --foreign-texts FILE")
    adversarial = {c for c in ADVERSARIAL_CLASSES if c != "foreign" or foreign_texts is not None}
    chosen = set(names) - set(CLASS_ALIASES)
    if "classic" in names or "all" in names:
        chosen |= set(CLASS_GROUPS) - set(ADVERSARIAL_CLASSES)
    if "adversarial" in names or "all" in names:
        chosen |= adversarial
    return frozenset(chosen)


def read_texts(path: Path) -> list[str]:
    """Texts of a JSONL file (its ``text`` field) or of a plain file (one per non-empty line)."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read --foreign-texts {path}: {e}") from e
    texts = []
    for n, line in enumerate(lines, 1):
        if line.lstrip().startswith("{"):
            try:
                value = json.loads(line).get("text")
            except (json.JSONDecodeError, AttributeError) as e:
                raise ConfigError(f"--foreign-texts {path} line {n} is not a JSON object: {e}") from e
            if isinstance(value, str) and value.strip():
                texts.append(value)
        else:
            texts.append(line.strip())
    if not texts:
        raise ConfigError(f"--foreign-texts {path} holds no text")
    return texts


COMMANDS = [redteam_command]
