"""misfiled's second separability test (cells of similar points kept together in the folds) per store, scan seed
and cell size — the shipped detector's own method, without a scan (issue 17, session 12).

    .venv/bin/python benchmarks/misfiled_gate.py [--stores govuk,news] [--seeds 0,1,2] [--sizes 10,20,40]
        [--repeats 5] [--data ../shared/data/dev] [--cache ~/.cache/vecaudit-bench]

Stores: any corpus of ``generalization.py`` (its tenancy store: four same-distribution tenants dealt by family,
seed 0, the red-team tenancy plants — no tenant model should pass) and the ``tenancy_quality.py`` scenarios whose
tenants differ (``news``: four Reuters desks, ``topics``: 11 Wikipedia topics, ``corpora``: four corpora — the
test must pass). Per row: the pooled lift over the largest tenant, ``z_beyond`` (standard errors above lift
``min_lift``; the test passes at ``min_separation_z``), the partitions pooled and the seconds. ``--repeats 1``
measures a single partition (misfiled version 6's test, whose line was the lift alone). Prints markdown.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import generalization  # noqa: E402
import tenancy_quality  # noqa: E402
from embedding_quality import DEFAULT_DATA, EmbeddingCache  # noqa: E402

from detectors.tenant_misfiled import MisfiledDetector  # noqa: E402

SCENARIOS = {"news": tenancy_quality.tenants_by_news_desk, "topics": tenancy_quality.tenants_by_topic,
             "corpora": tenancy_quality.tenants_by_corpora}


def store(name: str, data: Path, embed: EmbeddingCache) -> tuple[list[str], list[str | None], np.ndarray]:
    """Texts, tenants (None where a plant removed the label) and vectors of one store."""
    if name in SCENARIOS:
        texts, tenants = SCENARIOS[name](data, np.random.default_rng(0))
        return texts, list(tenants), embed(texts)
    if name not in generalization.ALL_CORPORA:
        raise SystemExit(f"unknown store {name!r}: one of {', '.join([*generalization.ALL_CORPORA, *SCENARIOS])}")
    rows = generalization.corpus_sample(data, name, 3000, 0)
    points, _truth = generalization.tenancy_store(rows, embed([r["text"] for r in rows]), embed, name, 0)
    return ([p[2]["text"] for p in points], [p[2].get("tenant") for p in points],
            np.stack([np.asarray(p[1], dtype=np.float32) for p in points]))


def gate(texts: list[str], tenants: list[str | None], vectors: np.ndarray, seed: int, size: int,
         repeats: int) -> dict[str, float]:
    """The detector's second test on the labelled points, as a scan with ``--seed seed`` runs it."""
    keep = [i for i, t in enumerate(tenants) if t is not None]
    names = sorted({str(tenants[i]) for i in keep})
    labels = np.array([names.index(str(tenants[i])) for i in keep], dtype=np.int64)
    unit = vectors[keep].astype(np.float32)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    # the few fields of a scan context the test reads: the seed, the text field and the point table's texts
    ctx: Any = SimpleNamespace(settings=SimpleNamespace(seed=seed), field_map=SimpleNamespace(text="text"),
                               table=SimpleNamespace(texts=[texts[i] for i in keep]), note=lambda _message: None)
    detector = MisfiledDetector(cell_size=size, cell_repeats=repeats)
    return detector._separability_beyond_neighbourhoods(ctx, unit, np.arange(len(keep)), labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stores", default="govuk,news")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--sizes", default="40")
    ap.add_argument("--repeats", type=int, default=int(MisfiledDetector.defaults["cell_repeats"]))
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vecaudit-bench")
    args = ap.parse_args()
    embed = EmbeddingCache(args.cache)
    line = MisfiledDetector.defaults["min_separation_z"]
    print(f"| store | cell size | seed | lift | z beyond lift {MisfiledDetector.defaults['min_lift']} | passes "
          f"(z >= {line}) | partitions | seconds |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for name in args.stores.split(","):
        texts, tenants, vectors = store(name, args.data, embed)
        for size in (int(v) for v in args.sizes.split(",")):
            for seed in (int(v) for v in args.seeds.split(",")):
                start = time.perf_counter()
                result = gate(texts, tenants, vectors, seed, size, args.repeats)
                print(f"| {name} | {size} | {seed} | {result['lift']:.3f} | {result['z_beyond']:.1f} | "
                      f"{'yes' if result['z_beyond'] >= line else 'no'} | {result['partitions']:.0f} | "
                      f"{time.perf_counter() - start:.1f} |", flush=True)


if __name__ == "__main__":
    main()
