"""The whole default in-process scan with a tenant field (issue 18 item 0): a Parquet export of synthetic clustered
384-d unit vectors in ten tenants (the generator of benchmarks/ray_scale.py), `vecaudit scan` in a fresh process
under /usr/bin/time -v (wall, peak RSS, per-stage seconds), optionally against cleanlab Datalab (outlier +
near_duplicate) on the same vectors in the same run, and the findings compared with an earlier scan's JSON.

    nice .venv/bin/python benchmarks/in_process_speed.py --points 100000 [--cleanlab-python PY] [--out DIR]
        [--reference DOC.json] [--vecaudit PATH]

cleanlab is AGPL: it runs only in a child interpreter given by --cleanlab-python (a separate venv with
cleanlab[datalab]), never in the product's process. Machine, date and load average go with every row, because the
box is shared: timings taken at load > 2 on 2 cores are inflated and say so in benchmarks/results/in-process-speed.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def machine() -> dict[str, Any]:
    mem = next((int(line.split()[1]) / 1024**2 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), float("nan"))
    return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "cores": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(), "mem_gib": round(mem, 1),
            "python": platform.python_version()}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class LoadSampler:
    """The 1-minute load average every ``every`` seconds while a child runs (min / mean / max for the row): on a
    shared box the load before and after a run does not say what the run itself shared the cores with."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {}
        return {"min": round(min(self.samples), 2), "mean": round(sum(self.samples) / len(self.samples), 2),
                "max": round(max(self.samples), 2)}


def commit() -> str:
    proc = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "auditor",
                            "detectors", "connectors"], capture_output=True, text=True, check=False).stdout.strip()
    return proc.stdout.strip() + (" + uncommitted changes" if dirty else "")


def export_for(n: int, out: Path) -> Path:
    from ray_scale import write_export

    path = out / f"export-{n}.parquet"
    if not path.exists():
        write_export(path, n, text=False)
    return path


def run_scan(export: Path, ledger: Path, vecaudit: str) -> dict[str, Any]:
    """One default `vecaudit scan --tenant-field tenant` in a fresh process: wall, peak RSS, the JSON document."""
    ledger.unlink(missing_ok=True)
    args = [vecaudit, "-q", "scan", f"file://{export}", "-c", "bench", "--tenant-field", "tenant", "--format", "json",
            "--exit-zero", "--ledger", f"sqlite:///{ledger}"]
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"scan failed ({proc.returncode}): {proc.stderr[-2000:]}")
    rss = next((int(line.split()[-1]) / 1024**2 for line in proc.stderr.splitlines()
                if "Maximum resident set size" in line), float("nan"))
    # CPU seconds (user + system): on a shared box the wall time depends on others' load, this much less
    cpu = sum(float(line.split(":")[-1]) for line in proc.stderr.splitlines()
              if line.strip().startswith(("User time (seconds)", "System time (seconds)")))
    return {"wall": round(wall, 1), "cpu_s": round(cpu, 1), "rss_gib": round(rss, 2), "doc": json.loads(proc.stdout)}


def answers(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(f["rule_id"], json.dumps(f["point_id"]), f["severity"]) for f in doc["findings"]}


def compare(doc: dict[str, Any], reference: dict[str, Any], tolerance: float = 1e-6) -> dict[str, Any]:
    """Findings (rule, point, severity) of ``doc`` against ``reference``, and the scores of the common ones: the
    largest relative difference and how many differ by more than ``tolerance`` (relative)."""
    a, b = answers(reference), answers(doc)
    scores_a = {(f["rule_id"], json.dumps(f["point_id"]), f["severity"]): f["score"] for f in reference["findings"]}
    scores_b = {(f["rule_id"], json.dumps(f["point_id"]), f["severity"]): f["score"] for f in doc["findings"]}
    diffs = [abs(scores_a[k] - scores_b[k]) / max(abs(scores_a[k]), 1e-12) for k in a & b
             if scores_a[k] is not None and scores_b[k] is not None]
    return {"reference": len(a), "now": len(b), "same": len(a & b),
            "agreement": round(len(a & b) / max(1, len(a | b)), 5),
            "only_reference": dict(Counter(f"{r}/{s}" for r, _, s in a - b)),
            "only_now": dict(Counter(f"{r}/{s}" for r, _, s in b - a)),
            "score_max_rel_diff": max(diffs, default=0.0),
            "scores_beyond_tolerance": sum(d > tolerance for d in diffs)}


def cleanlab_child(export: Path) -> dict[str, Any]:
    """Runs in the --cleanlab-python interpreter: Datalab outlier + near_duplicate on the export's vectors."""
    import numpy as np
    import pyarrow.parquet as pq
    from cleanlab import Datalab

    started = time.perf_counter()
    column = pq.read_table(export, columns=["vector"]).column("vector").combine_chunks()
    x = np.asarray(column.values, dtype=np.float32).reshape(len(column), -1)
    read_s = time.perf_counter() - started
    t0, c0 = time.perf_counter(), time.process_time()
    lab = Datalab(data={"id": np.arange(len(x))})
    lab.find_issues(features=x, issue_types={"outlier": {}, "near_duplicate": {}})
    issues = lab.get_issues()
    return {"cleanlab_find_issues_s": round(time.perf_counter() - t0, 1), "cleanlab_read_s": round(read_s, 1),
            "cleanlab_cpu_s": round(time.process_time() - c0, 1),
            "cleanlab_outliers": int(issues["is_outlier_issue"].sum()),
            "cleanlab_near_duplicates": int(issues["is_near_duplicate_issue"].sum()),
            "cleanlab_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--out", default="/tmp/vecaudit-in-process-speed")
    ap.add_argument("--cleanlab-python", help="interpreter with cleanlab[datalab] (a separate venv: AGPL)")
    ap.add_argument("--reference", help="an earlier scan's JSON document of the same export: compare findings")
    ap.add_argument("--vecaudit", default=str(Path(sys.executable).with_name("vecaudit")),
                    help="the vecaudit command to time (default: the one beside this interpreter)")
    ap.add_argument("--cleanlab-one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.cleanlab_one:
        print(json.dumps(cleanlab_child(Path(args.cleanlab_one))))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    export = export_for(args.points, out)
    row: dict[str, Any] = {"points": args.points, "tenants": 10, **machine(), "commit": commit(),
                           "load_before": load()}
    with LoadSampler() as during:
        scan = run_scan(export, out / f"ledger-{args.points}.db", args.vecaudit)
    row["load_during_scan"] = during.summary()
    doc = scan.pop("doc")
    (out / f"scan-{args.points}.json").write_text(json.dumps(doc))
    seconds = doc["scan"]["counts"]["seconds"]
    row.update(scan, load_after_scan=load(), findings=len(doc["findings"]),
               by_rule=dict(Counter(f"{f['rule_id']}/{f['severity']}" for f in doc["findings"])),
               stages={k: v for k, v in seconds.items() if v >= 0.5})
    if args.reference:
        row["findings_vs_reference"] = compare(doc, json.loads(Path(args.reference).read_text()))
    if args.cleanlab_python:
        started = time.perf_counter()
        with LoadSampler() as during:
            proc = subprocess.run([args.cleanlab_python, __file__, "--cleanlab-one", str(export)],
                                  capture_output=True, text=True, check=False)
        row["load_during_cleanlab"] = during.summary()
        if proc.returncode != 0:
            raise SystemExit(f"cleanlab failed: {proc.stderr[-2000:]}")
        row.update(json.loads(proc.stdout.strip().splitlines()[-1]), load_after_cleanlab=load(),
                   cleanlab_wall=round(time.perf_counter() - started, 1))
        row["speedup_vs_cleanlab"] = round(row["cleanlab_find_issues_s"] / row["wall"], 1)
        row["cpu_ratio_vs_cleanlab"] = round(row["cleanlab_cpu_s"] / max(row["cpu_s"], 1e-9), 1)
    print(json.dumps(row, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
