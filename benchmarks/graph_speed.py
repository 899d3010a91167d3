"""Speed and memory of pass 2 (shared graph + outlier + near-duplicate + hub) on synthetic clustered unit vectors,
with neighbour recall, against cleanlab Datalab and PyOD KNN/LOF on the same data (comparison only, not shipped).

    .venv/bin/python benchmarks/graph_speed.py [--sizes 100000,1000000] [--compare] [--crossover] [--k 10]
        [--compare-python .venv-compare/bin/python]   # cleanlab[datalab]==2.9.0 + pyod live in their own venv
    .venv/bin/python benchmarks/graph_speed.py --ivf synthetic:100000 --ivf ~/.cache/vecaudit-bench/minilm.npz
        [--nndescent]   # IVF graph and IVF tenant lists: time, chosen spread, recall@10 against exact

Each size runs in its own process so peak RSS (ru_maxrss) is that size's alone; vectors go through the real
PointTable (float32 memmap spill), so pass 2 reads them from disk as a scan does.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DIM = 384


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clustered unit vectors (n/200 clusters) with 0.1% planted outliers (uniform directions) and 0.1% planted
    near-duplicate pairs (a copy + tiny noise). Returns vectors, outlier rows, near-duplicate (copy, source) rows."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, n // 200), DIM)).astype(np.float32)
    x = np.empty((n, DIM), dtype=np.float32)
    step = 100_000
    for start in range(0, n, step):
        m = min(step, n - start)
        block = centres[rng.integers(0, len(centres), m)] + 0.45 * rng.normal(size=(m, DIM)).astype(np.float32)
        x[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    planted = rng.choice(n, size=max(2, n // 500), replace=False)
    outliers, dup_rows = planted[: len(planted) // 2], planted[len(planted) // 2 :]
    noise = rng.normal(size=(len(outliers), DIM)).astype(np.float32)
    x[outliers] = noise / np.linalg.norm(noise, axis=1, keepdims=True)
    sources = rng.choice(np.setdiff1d(np.arange(n), planted), size=len(dup_rows), replace=False)
    copies = x[sources] + 0.01 * rng.normal(size=(len(dup_rows), DIM)).astype(np.float32)
    x[dup_rows] = copies / np.linalg.norm(copies, axis=1, keepdims=True)
    return x, outliers, np.stack([dup_rows, sources], axis=1)


def peak_rss_gib() -> float:
    """Peak RSS since the process started or since the last :func:`reset_peak_rss` (Linux VmHWM)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def reset_peak_rss() -> bool:
    """Restart the peak-RSS count here (Linux >= 4.0: writing 5 to clear_refs resets VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def sample_recall(x: np.ndarray, indices: np.ndarray, k: int, sample: int = 1000, seed: int = 1) -> float:
    """recall@k of the graph against exact neighbours of ``sample`` random points (brute force, 100 at a time so
    a 1M-point check stays under 1 GiB)."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(x), size=min(sample, len(x)), replace=False)
    hits = []
    for start in range(0, len(rows), 100):
        part = rows[start : start + 100]
        sims = _blocked(x, part)
        sims[np.arange(len(part)), part] = -np.inf
        truth = np.argpartition(-sims, k, axis=1)[:, :k]
        hits += [len(set(truth[i]) & set(indices[r, :k])) / k for i, r in enumerate(part)]
    return float(np.mean(hits))


def _blocked(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    q = np.asarray(x[rows])
    out = np.empty((len(rows), len(x)), dtype=np.float32)
    for start in range(0, len(x), 100_000):
        out[:, start : start + 100_000] = q @ np.asarray(x[start : start + 100_000]).T
    return out


def run_one(n: int, k: int, warm: bool = True) -> dict[str, Any]:
    """Pass 1 into a real PointTable, then pass 2 (graph + outlier + near-duplicate + hub), timed."""
    from sklearn.metrics import average_precision_score

    from auditor.batching import make_batch
    from auditor.context import ScanContext, ScanSettings
    from auditor.types import CollectionInfo, Distance, FieldMap
    from detectors.duplicates import NearDuplicateDetector
    from detectors.hubs import HubDetector
    from detectors.outliers import OutlierDetector, knn_distance

    x, outliers, dups = synthetic(n)
    fm = FieldMap()
    info = CollectionInfo(name="synthetic", dim=DIM, distance=Distance.COSINE, count=n)
    ctx = ScanContext(info=info, field_map=fm, collection_key="bench", settings=ScanSettings())
    detectors = [OutlierDetector(), NearDuplicateDetector(), HubDetector()]
    for det in detectors:
        ctx.request_neighbours(det.neighbours_needed())
    t0 = time.perf_counter()
    for start in range(0, n, 20_000):
        stop = min(n, start + 20_000)
        ctx.table.append(make_batch(list(range(start, stop)), x[start:stop], [{}] * (stop - start), fm))
    ctx.table.seal()
    pass_one = time.perf_counter() - t0
    del x
    jit_s = 0.0
    if warm:
        # numba compiles pynndescent's kernels once per process (~15-20 s, partly cached on disk): timed apart
        from auditor.graph import approximate_graph

        t0 = time.perf_counter()
        approximate_graph(synthetic(3000, seed=9)[0], k, Distance.COSINE)
        jit_s = time.perf_counter() - t0
    before_pass_two = peak_rss_gib()
    reset = reset_peak_rss()
    t0 = time.perf_counter()
    graph = ctx.graph(k)
    graph_s = time.perf_counter() - t0
    stages = {"graph": round(graph_s, 1)}
    found = {}
    for det in detectors:
        t1 = time.perf_counter()
        found[det.name] = list(det.finish(ctx))
        stages[det.name] = round(time.perf_counter() - t1, 1)
    pass_two = time.perf_counter() - t0
    # pass 2's own peak (the synthetic data's generation and the recall check below are not part of a scan)
    pass_two_rss = peak_rss_gib() if reset else float("nan")
    # AP over every point uses the detector's documented score (kNN distance; its robust z is monotone in it)
    scores = knn_distance(graph, k)
    flagged = {int(f.point_id) for f in found["outlier"]}
    labels = np.zeros(n, dtype=int)
    labels[outliers] = 1
    dup_pairs = {frozenset(map(int, p)) for p in dups}
    dup_found = {int(f.point_id) for f in found["near-duplicate"]}
    recall = sample_recall(ctx.table.vectors, graph.indices, k)
    result = {
        "n": n, "k": k, "exact": graph.exact, "pass_one_s": round(pass_one, 1), "jit_warmup_s": round(jit_s, 1),
        "graph_s": round(graph_s, 1),
        "pass_two_s": round(pass_two, 1), "pass_two_peak_rss_gib": round(pass_two_rss, 2),
        "peak_rss_before_pass_two_gib": round(before_pass_two, 2), "recall_at_k": round(recall, 4),
        "outlier_ap": round(float(average_precision_score(labels, scores)), 4),
        "near_dup_recall": round(float(np.mean([bool(p <= dup_found) for p in dup_pairs])), 4),
        "outlier_flagged_at_default": len(flagged), "planted_outliers_flagged": len(flagged & set(map(int, outliers))),
        "planted_outliers": len(outliers), "stages_s": stages,
    }
    ctx.close()
    return result


def run_compare(n: int) -> dict[str, Any]:
    """cleanlab Datalab (outlier + near_duplicate) and PyOD KNN / LOF on the same synthetic set."""
    from sklearn.metrics import average_precision_score

    x, outliers, dups = synthetic(n)
    labels = np.zeros(n, dtype=int)
    labels[outliers] = 1
    out: dict[str, Any] = {"n": n}
    from cleanlab import Datalab

    t0 = time.perf_counter()
    lab = Datalab(data={"id": np.arange(n)})
    lab.find_issues(features=x, issue_types={"outlier": {}, "near_duplicate": {}})
    out["cleanlab_s"] = round(time.perf_counter() - t0, 1)
    issues = lab.get_issues()
    out["cleanlab_outlier_ap"] = round(float(average_precision_score(labels, 1 - issues["outlier_score"])), 4)
    flagged = set(np.flatnonzero(issues["is_near_duplicate_issue"].to_numpy()))
    out["cleanlab_near_dup_recall"] = round(float(np.mean([int(a) in flagged and int(b) in flagged
                                                           for a, b in dups])), 4)
    print(json.dumps(out), file=sys.stderr, flush=True)  # partial results survive a slow PyOD run
    from pyod.models.knn import KNN
    from pyod.models.lof import LOF

    for name, model in (("pyod_knn", KNN(n_neighbors=10)), ("pyod_lof", LOF(n_neighbors=10))):
        t0 = time.perf_counter()
        model.fit(x)
        out[f"{name}_s"] = round(time.perf_counter() - t0, 1)
        out[f"{name}_ap"] = round(float(average_precision_score(labels, model.decision_scores_)), 4)
        print(json.dumps(out), file=sys.stderr, flush=True)
    out["peak_rss_gib"] = round(peak_rss_gib(), 2)
    return out


def run_crossover(sizes: list[int], k: int) -> list[dict[str, Any]]:
    """Exact blocked search vs pynndescent build time (after one warm-up build to compile numba)."""
    from auditor.graph import approximate_graph, exact_graph
    from auditor.types import Distance

    warm = synthetic(3000)[0]
    t0 = time.perf_counter()
    approximate_graph(warm, k, Distance.COSINE)
    rows = [{"warmup_jit_s": round(time.perf_counter() - t0, 1)}]
    for n in sizes:
        x = synthetic(n)[0]
        t0 = time.perf_counter()
        e = exact_graph(x, k, Distance.COSINE)
        te = time.perf_counter() - t0
        t0 = time.perf_counter()
        a = approximate_graph(x, k, Distance.COSINE)
        ta = time.perf_counter() - t0
        rec = float(np.mean([len(set(a.indices[i]) & set(e.indices[i])) / k for i in range(n)]))
        rows.append({"n": n, "exact_s": round(te, 2), "pynndescent_s": round(ta, 2), "recall": round(rec, 4)})
    return rows


def run_ivf(source: str, with_nndescent: bool, tenants: int = 10, queries: int = 2000) -> dict[str, Any]:
    """The IVF graph (k 20, as a default scan asks) of ``source`` (``synthetic:N`` or an ``.npz`` with a ``vecs``
    array, e.g. the all-MiniLM-L6-v2 cache of embedding_quality.py) and the lists inside ``tenants`` round-robin
    tenants through its cells: wall and CPU seconds, the spread chosen, recall@10 against exact search on
    ``queries`` sampled points (collection, and inside each sampled point's tenant); NN-descent on the same sample
    with ``with_nndescent``."""
    import auditor.graph as graph
    from auditor.types import Distance

    if source.startswith("synthetic:"):
        x = synthetic(int(source.split(":")[1]))[0]
    else:
        with np.load(Path(source).expanduser()) as data:
            x = np.asarray(data["vecs"], dtype=np.float32)
    x = graph.prepare(x, Distance.COSINE)
    n = len(x)
    rng = np.random.default_rng(1)
    q = np.sort(rng.choice(n, size=min(queries, n), replace=False))
    sims = _blocked(x, q)
    sims[np.arange(len(q)), q] = -np.inf
    label = np.arange(n) % tenants

    def recall(found: np.ndarray, s: np.ndarray) -> float:
        """Found entries at least as similar as the exact 10th (ties are not misses)."""
        bar = -np.sort(-s, axis=1)[:, 9:10] - 1e-5
        got = np.take_along_axis(s, np.maximum(found[:, :10], 0), axis=1)
        return float(np.mean(((got >= bar) & (found[:, :10] >= 0)).sum(axis=1) / 10))

    out: dict[str, Any] = {"source": source, "n": n, "dim": x.shape[1]}
    t0, c0 = time.perf_counter(), time.process_time()
    g = graph.ivf_graph(x, 20, Distance.COSINE)
    out.update(ivf_s=round(time.perf_counter() - t0, 2), ivf_cpu_s=round(time.process_time() - c0, 2))
    if g is None or g.partition is None:
        out["ivf"] = "declined: sampled recall under IVF_MIN_RECALL (NN-descent builds the graph)"
    else:
        out.update(cells=g.partition.cells, spread=g.partition.spread, sampled_recall=round(g.partition.recall, 4),
                   recall_at_10=round(recall(g.indices[q], sims), 4))
        t0, c0 = time.perf_counter(), time.process_time()
        lists: dict[int, tuple[np.ndarray, np.ndarray] | None] = {}
        for t in range(tenants):
            rows = np.flatnonzero(label == t)
            found = graph.group_search(x, g.partition, rows, rows, 10, Distance.COSINE)
            lists[t] = None if found is None else (rows, found[0])
        out.update(tenant_s=round(time.perf_counter() - t0, 2), tenant_cpu_s=round(time.process_time() - c0, 2),
                   tenants_declined=sum(v is None for v in lists.values()))
        got, within = [], []
        for i, row in enumerate(q):
            entry = lists[int(label[row])]
            if entry is not None:
                got.append(entry[1][np.searchsorted(entry[0], row)])
                within.append(np.where(label == label[row], sims[i], -np.inf))
        if got:
            out["tenant_recall_at_10"] = round(recall(np.array(got), np.array(within)), 4)
    if with_nndescent:
        graph.approximate_graph(synthetic(3000, seed=9)[0], 20, Distance.COSINE)  # numba kernels loaded apart
        t0 = time.perf_counter()
        a = graph.approximate_graph(x, 20, Distance.COSINE)
        out.update(nndescent_s=round(time.perf_counter() - t0, 2), nndescent_recall_at_10=round(recall(a.indices[q],
                                                                                                       sims), 4))
    out["load"] = [round(v, 2) for v in os.getloadavg()]
    return out


def _child(args: list[str], python: str | None = None) -> dict[str, Any]:
    proc = subprocess.run([python or sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"args": args, "error": proc.stderr.strip().splitlines()[-1:] or ["?"]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--compare", action="store_true", help="cleanlab and PyOD on the smallest size")
    ap.add_argument("--compare-python", help="interpreter with cleanlab[datalab] and pyod installed (default: this "
                    "one); e.g. a separate venv, so the product's venv never holds AGPL code")
    ap.add_argument("--crossover", action="store_true", help="exact vs pynndescent build time")
    ap.add_argument("--crossover-sizes", default="5000,10000,20000,40000")
    ap.add_argument("--cold", action="store_true", help="time pass 2 including numba's one-off compilation")
    ap.add_argument("--ivf", action="append", default=[], help="IVF graph recall and time on synthetic:N or an .npz")
    ap.add_argument("--nndescent", action="store_true", help="with --ivf: NN-descent on the same points too")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--compare-one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.k, warm=not args.cold)))
        return 0
    if args.ivf:
        for source in args.ivf:
            print(json.dumps(run_ivf(source, args.nndescent)), flush=True)
        return 0
    if args.compare_one:
        print(json.dumps(run_compare(args.compare_one)))
        return 0
    print(f"# pass-2 speed ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores)\n")
    if args.crossover:
        print("## exact vs approximate graph\n")
        for row in run_crossover([int(s) for s in args.crossover_sizes.split(",")], args.k):
            print(json.dumps(row), flush=True)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    for n in sizes:
        print(json.dumps(_child(["--one", str(n), "--k", str(args.k), *(["--cold"] if args.cold else [])])), flush=True)
    if args.compare and sizes:
        print(json.dumps(_child(["--compare-one", str(min(sizes))], args.compare_python)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
