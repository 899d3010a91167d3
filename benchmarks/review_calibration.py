"""Review-driven recalibration measured on the development corpora (issue 17, item 8), default detector settings.

A local Qdrant store of clean look-alikes — web-search evidence passages retrieved five per claim (FactCheck-GPT)
and BEIR-hotpotqa passages retrieved about ten per question (PIArena) — is scanned twice into two ledgers. In one,
a reviewer marks every finding of the baseline false_positive (the data is clean); the other is the control. Then
the second half of the claims arrives (new points) and both ledgers scan again: how many findings on the new points
alert, per rule. Then the PoisonedRAG authors' passages (stored alone, without the question) are planted for 40
questions and both scan again: how many planted passages an alerting finding names.

    python benchmarks/review_calibration.py --out benchmarks/results/review.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev"
DETECTORS = ("poison-cluster", "injection")


def _rows(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _scan(uri: str, ledger_url: str) -> Any:
    from auditor.context import ScanSettings
    from auditor.engine import Scanner, ScanOptions
    from auditor.ledger import Ledger
    from auditor.registry import connector_for, detector_classes

    classes = detector_classes()
    ledger = Ledger(ledger_url).open()
    connector = connector_for(uri, collection="docs")
    try:
        opts = ScanOptions(field_map=_field_map(), settings=ScanSettings(), show_progress=False)
        return Scanner(ledger, connector, [classes[n]() for n in DETECTORS], opts).run()
    finally:
        connector.close()
        ledger.dispose()


def _field_map() -> Any:
    from auditor.types import FieldMap

    return FieldMap(text="text")


def _upsert(path: Path, start: int, texts: list[str], vectors: np.ndarray) -> list[int]:
    from qdrant_client import QdrantClient, models

    ids = list(range(start, start + len(texts)))
    client = QdrantClient(path=str(path))
    try:
        if not client.collection_exists("docs"):
            client.create_collection(
                "docs", vectors_config=models.VectorParams(size=vectors.shape[1], distance=models.Distance.COSINE)
            )
        for lo in range(0, len(ids), 512):
            client.upsert("docs", [
                models.PointStruct(id=i, vector=v.tolist(), payload={"text": t})
                for i, t, v in zip(ids[lo:lo + 512], texts[lo:lo + 512], vectors[lo:lo + 512], strict=True)
            ])
    finally:
        client.close()
    return ids


def _alerting(result: Any, points: set[int]) -> Counter[str]:
    return Counter(r.finding.rule_id for r in result.findings if r.alert and r.finding.point_id in points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--poison-targets", type=int, default=40)
    args = parser.parse_args()
    from auditor.cli.findings import reviewer_name
    from auditor.embedder import Embedder
    from auditor.ledger import Ledger
    from auditor.ledger.repository import add_review
    from auditor.types import Severity

    started = time.perf_counter()
    web = _rows(DEV / "corpora" / "factcheckgpt_web_evidence.jsonl")
    hot = _rows(DEV / "corpora" / "piarena_hotpotqa_retrieved_passages.jsonl")
    groups = sorted({r["group"] for r in web}, key=str)
    later_groups = set(groups[len(groups) // 2:])
    base = [r["text"] for r in web if r["group"] not in later_groups] + [r["text"] for r in hot]
    later = [r["text"] for r in web if r["group"] in later_groups]
    poison_rows = _rows(DEV / "poison" / "poisonedrag_hotpotqa.jsonl")
    targets = sorted({r["target_id"] for r in poison_rows})[: args.poison_targets]
    poisons = [r["text"] for r in poison_rows if r["target_id"] in targets]

    embedder = Embedder()
    tmp = Path(tempfile.mkdtemp(prefix="vecaudit-review-"))
    try:
        store = tmp / "qdrant"
        _upsert(store, 0, base, embedder.encode(base))
        uri = f"qdrant+local://{store}"
        labelled, control = f"sqlite:///{tmp / 'labelled.db'}", f"sqlite:///{tmp / 'control.db'}"
        baseline = _scan(uri, labelled)
        _scan(uri, control)
        ledger = Ledger(labelled).open()
        labels: Counter[str] = Counter()
        with ledger.session() as s:
            for r in baseline.findings:
                if r.finding.rule_id in ("VA321", "VA322") or r.finding.rule_id.startswith("VA51"):
                    add_review(s, finding_id=r.row_id, reviewer=reviewer_name(None), verdict="false_positive",
                               note="clean development corpus")
                    labels[r.finding.rule_id] += 1
        ledger.dispose()

        new_ids = set(_upsert(store, len(base), later, embedder.encode(later)))
        after, ctrl = _scan(uri, labelled), _scan(uri, control)
        fa_after, fa_ctrl = _alerting(after, new_ids), _alerting(ctrl, new_ids)
        notes = [n for n in after.notes if n.startswith("calibration:")]

        planted = set(_upsert(store, len(base) + len(later), poisons, embedder.encode(poisons)))
        plant_after, plant_ctrl = _scan(uri, labelled), _scan(uri, control)

        def active_medium(result: Any) -> int:
            return sum(1 for r in result.findings if r.finding.effective_severity >= Severity.MEDIUM
                       and r.status not in ("false_positive", "accepted", "resolved"))

        def caught(result: Any) -> int:
            return len({r.finding.point_id for r in result.findings if r.alert and r.finding.point_id in planted})

        # a reviewer looks at the calibrated rules' LOW findings and confirms the lowest-scoring planted one per rule
        kept_low = [r for r in plant_after.findings if r.finding.point_id in planted and "calibration" in
                    r.finding.evidence]
        lowest: dict[str, Any] = {}
        for r in kept_low:
            if r.finding.rule_id not in lowest or r.finding.score < lowest[r.finding.rule_id].finding.score:
                lowest[r.finding.rule_id] = r
        ledger = Ledger(labelled).open()
        with ledger.session() as s:
            for r in lowest.values():
                add_review(s, finding_id=r.row_id, reviewer=reviewer_name(None), verdict="confirmed", note="poison")
        ledger.dispose()
        confirmed = _scan(uri, labelled)
        def medium_on(result: Any, points: set[int]) -> set[int]:
            return {r.finding.point_id for r in result.findings if r.finding.point_id in points
                    and r.finding.effective_severity >= Severity.MEDIUM and r.status != "false_positive"}

        back = medium_on(confirmed, planted)

        lines = [
            "# Review-driven recalibration on the development corpora",
            "",
            f"`python benchmarks/review_calibration.py` ({time.perf_counter() - started:.0f} s on this machine):"
            f" detectors {', '.join(DETECTORS)} at their defaults; a local Qdrant store of {len(base):,} clean"
            " passages (FactCheck-GPT web evidence for half of its claims, PIArena hotpotqa retrieved passages);"
            " two ledgers, one where a reviewer marks every baseline finding false_positive"
            f" ({', '.join(f'{k} {v}' for k, v in sorted(labels.items())) or 'none'}).",
            "",
            "Monitoring mode alone (the control ledger's second scan, after the new claims arrived): "
            f"{active_medium(ctrl)} active MEDIUM+ findings, of which {ctrl.counts['alerts']['alerting']} alert"
            " under `--alert-on changed` (the default); `--alert-on all` would alert on all of them.",
            "",
            "| | control (no labels) | after the labels |",
            "|---|---|---|",
            f"| findings alerting on {len(later):,} newly ingested clean web-evidence passages (the other half of"
            f" the claims) | {sum(fa_ctrl.values())} ({dict(sorted(fa_ctrl.items()))}) |"
            f" {sum(fa_after.values())} ({dict(sorted(fa_after.items()))}) |",
            f"| PoisonedRAG passages (stored alone, {len(targets)} questions) named by an alerting finding |"
            f" {caught(plant_ctrl)}/{len(planted)} | {caught(plant_after)}/{len(planted)}"
            f" ({len(kept_low)} kept LOW by the lines) |",
            f"| the same after the reviewer confirms the lowest-scoring kept-LOW plant of each calibrated rule"
            f" ({', '.join(f'{k} {v.finding.score:.3f}' for k, v in sorted(lowest.items()))}): planted passages"
            f" with a MEDIUM+ finding | {caught(plant_ctrl)}/{len(planted)} | {len(back)}/{len(planted)} |",
            f"| ... and the {len(later):,} new clean passages with a MEDIUM+ finding then (the confirmation lowers"
            f" the line for the false alarms too) | {len(medium_on(plant_ctrl, new_ids))} |"
            f" {len(medium_on(confirmed, new_ids))} |",
            "",
            "Scan notes of the labelled ledger's second scan:",
            "",
            *[f"- {n}" for n in notes],
            "",
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
