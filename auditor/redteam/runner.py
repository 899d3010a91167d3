"""Copy a collection into a scratch Qdrant store, record a baseline, plant attacks, scan, and score the scan."""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from auditor.connector import Connector
from auditor.detector import Detector
from auditor.engine import Scanner, ScanOptions, ScanResult
from auditor.errors import ConfigError
from auditor.ledger import Ledger
from auditor.masking import redact_text
from auditor.progress import progress_bar
from auditor.redteam.adversarial import AdversarialOptions
from auditor.redteam.generators import Doc, Embed, Plan, build_plan
from auditor.registry import connector_for
from auditor.scratch import recreate_owned_dir
from auditor.types import Distance, FieldMap, resolve_field

MARKER = ".vecaudit-redteam"

#: Detectors meant to catch each attack class (a catch by any other detector is listed too, not counted).
EXPECTED: dict[str, frozenset[str]] = {
    "poison": frozenset({"poison-cluster"}),
    "hub": frozenset({"hub"}),
    "tamper-swap": frozenset({"vector-text-mismatch", "provenance"}),
    "tamper-query": frozenset({"vector-text-mismatch", "provenance"}),
    "tamper-perturb": frozenset({"vector-text-mismatch", "provenance"}),
    "cross-tenant-copy": frozenset({"cross-tenant-copy"}),
    "misfiled": frozenset({"misfiled"}),
    "unlabeled": frozenset({"integrity", "tenant-label"}),
    "injection": frozenset({"injection"}),
    "secret": frozenset({"secrets"}),
    "pii": frozenset({"pii"}),
    "zero-vector": frozenset({"integrity"}),
    "wrong-norm": frozenset({"integrity"}),
    "copied-vector": frozenset({"integrity"}),
    # issue 16: optimised token soup is meant for the hub detector's VA333 (and white-box passages still carry a
    # poison's claim); counterfactual twins for conflicting-twins (opt-in) or as near-duplicates of their original;
    # a foreign cluster for language-group or as outliers; typo bursts for typo-burst (VA352, default set, LOW) or
    # the opt-in naturalness detector's typo component (VA351); passages that dominate retrieval (GASLITE, corpus
    # poisoning) also for the opt-in dominance detector (VA334/VA335).
    "whitebox-poison": frozenset({"poison-cluster", "hub"}),
    "gaslite": frozenset({"hub", "dominance"}),
    "corpus-poisoning": frozenset({"hub", "dominance"}),
    "typo": frozenset({"typo-burst", "naturalness"}),
    "counterfactual": frozenset({"conflicting-twins", "near-duplicate"}),
    "foreign": frozenset({"language-group", "outlier"}),
}

_QDRANT_DISTANCE = {
    Distance.COSINE: "COSINE",
    Distance.DOT: "DOT",
    Distance.EUCLID: "EUCLID",
    Distance.MANHATTAN: "MANHATTAN",
}


@dataclass
class CopiedCollection:
    ids: list[Any]
    vectors: np.ndarray
    payloads: list[dict[str, Any]]
    distance: Distance


def read_source(connector: Connector, *, sample: int | None, seed: int, show_progress: bool) -> CopiedCollection:
    """Every point (or a seeded reservoir sample of ``sample``) of the source; the source is only read."""
    info = connector.describe()
    rng = random.Random(seed)
    kept: list[tuple[Any, np.ndarray, dict[str, Any]]] = []
    seen = 0
    bar = progress_bar(total=info.count or None, desc="copy", unit="pt", enabled=show_progress)
    try:
        for page, _ in connector.iter_batches(batch_size=512):
            for pid, vec, payload in zip(page.ids, page.vectors, page.payloads, strict=True):
                if vec is None or len(vec) != info.dim:
                    continue
                item = (pid, np.asarray(vec, dtype=np.float32), dict(payload))
                seen += 1
                if sample is None or len(kept) < sample:
                    kept.append(item)
                else:
                    j = rng.randrange(seen)
                    if j < sample:
                        kept[j] = item
            bar.update(len(page))
    finally:
        bar.close()
    if not kept:
        raise ConfigError(f"the source collection {info.name!r} has no usable points to copy")
    return CopiedCollection([k[0] for k in kept], np.stack([k[1] for k in kept]), [k[2] for k in kept], info.distance)


def prepare_scratch(path: Path) -> None:
    """Empty ``path`` for the red-team copy; refuse to delete a folder vecaudit did not create."""
    recreate_owned_dir(path, marker=MARKER, command="redteam", option="--into")


def write_copy(path: Path, collection: str, copied: CopiedCollection) -> str:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(path / "qdrant"))
    try:
        client.create_collection(
            collection,
            vectors_config=models.VectorParams(
                size=copied.vectors.shape[1], distance=getattr(models.Distance, _QDRANT_DISTANCE[copied.distance])
            ),
        )
        for start in range(0, len(copied.ids), 512):
            client.upsert(
                collection,
                [
                    models.PointStruct(id=pid, vector=vec.tolist(), payload=payload)
                    for pid, vec, payload in zip(
                        copied.ids[start : start + 512],
                        copied.vectors[start : start + 512],
                        copied.payloads[start : start + 512],
                        strict=True,
                    )
                ],
            )
    finally:
        client.close()
    return f"qdrant+local://{(path / 'qdrant').resolve()}"


def apply_plan(store_uri: str, collection: str, plan: Plan, ids: Sequence[Any]) -> None:
    """Write the planned attacks into the scratch store (new points get fresh ids of the same kind)."""
    import uuid

    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=store_uri.removeprefix("qdrant+local://"))
    try:
        numeric = all(isinstance(i, int) for i in ids)
        next_id = (max(ids) + 1) if numeric and ids else 0
        points = []
        for (text, vec, payload), attack in zip(plan.new_points, plan.new_classes, strict=True):
            pid: Any = next_id if numeric else str(uuid.uuid5(uuid.NAMESPACE_URL, f"vecaudit-redteam/{next_id}"))
            next_id += 1
            points.append(models.PointStruct(id=pid, vector=np.asarray(vec, np.float32).tolist(), payload=payload))
            plan.mark(attack, pid, redact_text(text, limit=80))  # planted texts quote real documents
        if points:
            client.upsert(collection, points)
        if plan.vector_updates:
            client.update_vectors(
                collection,
                [
                    models.PointVectors(id=pid, vector=np.asarray(v, np.float32).tolist())
                    for pid, v in plan.vector_updates.items()
                ],
            )
        for pid, payload in plan.payload_updates.items():
            client.set_payload(collection, payload=payload, points=[pid])
        for pid, keys in plan.payload_deletes.items():
            client.delete_payload(collection, keys=keys, points=[pid])
    finally:
        client.close()


@dataclass
class ClassScore:
    planted: int
    caught: int
    missed: list[Any]
    flagged_by_expected: int
    true_flags: int
    detectors: dict[str, int] = field(default_factory=dict)

    @property
    def recall(self) -> float:
        return self.caught / self.planted if self.planted else 0.0

    @property
    def precision(self) -> float | None:
        return self.true_flags / self.flagged_by_expected if self.flagged_by_expected else None


def score(planted: dict[str, list[Any]], result: ScanResult) -> dict[str, ClassScore]:
    """Per attack class: planted, caught by its expected detectors, missed, and the expected detectors' precision
    (share of the points they flagged that were planted by any class)."""
    flagged: dict[str, set[Any]] = {}
    for rec in result.findings:
        f = rec.finding
        if f.point_id is not None:
            flagged.setdefault(f.detector, set()).add(f.point_id)
    every_planted = {p for ids in planted.values() for p in ids}
    scores = {}
    for attack, ids in planted.items():
        expected = EXPECTED.get(attack, frozenset())
        by_expected = set().union(*(flagged.get(d, set()) for d in expected)) if expected else set()
        caught = [p for p in ids if p in by_expected]
        scores[attack] = ClassScore(
            planted=len(ids),
            caught=len(caught),
            missed=[p for p in ids if p not in by_expected],
            flagged_by_expected=len(by_expected),
            true_flags=len(by_expected & every_planted),
            detectors={d: len(set(ids) & pts) for d, pts in sorted(flagged.items()) if set(ids) & pts},
        )
    return scores


def report_document(scores: dict[str, ClassScore], plan: Plan, **meta: Any) -> dict[str, Any]:
    return {
        "version": 1,
        **meta,
        "classes": {
            attack: {
                "planted": s.planted,
                "caught": s.caught,
                "missed": len(s.missed),
                "recall": round(s.recall, 4),
                "precision": None if s.precision is None else round(s.precision, 4),
                "detectors": s.detectors,
                "expected_detectors": sorted(EXPECTED.get(attack, ())),
                "missed_points": [{"point_id": p, "what": plan.descriptions.get(p, "")} for p in s.missed],
            }
            for attack, s in sorted(scores.items())
        },
    }


@dataclass
class RedteamRun:
    scratch: Path
    store_uri: str
    ledger_url: str
    plan: Plan
    baseline: ScanResult
    result: ScanResult
    scores: dict[str, ClassScore]


def run_redteam(
    source: str,
    *,
    collection: str,
    into: Path,
    detectors: Callable[[], list[Detector]],
    options: ScanOptions,
    embed: Embed,
    sample: int | None = None,
    seed: int = 0,
    per_class: int = 10,
    vector: str | None = None,
    connector_options: dict[str, Any] | None = None,
    classes: Collection[str] | None = None,
    adversarial: AdversarialOptions | None = None,
) -> RedteamRun:
    """Copy, baseline, plant, scan, score. Only the scratch folder ``into`` is written."""
    fm: FieldMap = options.field_map
    if not fm.text:
        raise ConfigError("redteam needs the text field", hint="pass --text-field")
    with connector_for(source, collection=collection, vector=vector, options=connector_options) as src:
        copied = read_source(src, sample=sample, seed=seed, show_progress=options.show_progress)
    src_resolved = (
        Path(source.removeprefix("qdrant+local://")).resolve() if source.startswith("qdrant+local://") else None
    )
    if src_resolved is not None and into.resolve() in (src_resolved, *src_resolved.parents):
        raise ConfigError("--into must not be the source store or a folder containing it")
    prepare_scratch(into)
    store_uri = write_copy(into, collection, copied)
    ledger = Ledger(f"sqlite:///{(into / 'ledger.db').resolve()}").open()
    try:

        def scan() -> ScanResult:
            with connector_for(store_uri, collection=collection) as conn:
                return Scanner(ledger, conn, detectors(), options).run()

        baseline = scan()
        docs = [
            Doc(i, pid, text, _label(resolve_field(p, fm.tenant)) if fm.tenant else None, copied.vectors[i])
            for i, (pid, p) in enumerate(zip(copied.ids, copied.payloads, strict=True))
            if isinstance(text := resolve_field(p, fm.text), str) and text.strip()
        ]
        plan = build_plan(docs, embed, seed=seed, per_class=per_class, text_field=fm.text, tenant_field=fm.tenant,
                          classes=classes, adversarial=adversarial)
        apply_plan(store_uri, collection, plan, copied.ids)
        result = scan()
    finally:
        ledger.dispose()
    return RedteamRun(
        into,
        store_uri,
        f"sqlite:///{(into / 'ledger.db').resolve()}",
        plan,
        baseline,
        result,
        score(plan.planted, result),
    )


def _label(value: Any) -> str | None:
    from auditor.types import tenant_label

    return tenant_label(value)
