"""Same answers (issue 18 item 5): on a real local Ray cluster the Ray engine records the findings the in-process
engine records — on a 20,000-point Parquet export (exact graph path; real all-MiniLM-L6-v2 text for the shipped
slices, the rest generated around them) and on the demo store, whose findings table must read the same."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from auditor.cli.main import cli
from auditor.cli.scan import select_detectors
from auditor.config import Config
from auditor.context import ScanSettings
from auditor.embedder import clear_encoding_cache
from auditor.engine import Scanner, ScanOptions, ScanResult
from auditor.findings import point_key
from auditor.ledger import Ledger
from auditor.ray_engine import RayOptions, RayScanner
from auditor.registry import connector_for, detector_classes
from auditor.types import FieldMap

DATA = Path(__file__).parents[1] / "data"

N = 20_000
REAL = ["wikipedia_en.jsonl", "pubmed.jsonl", "emails.jsonl", "code.jsonl", "hotpotqa_retrieved.jsonl",
        "wikipedia_es.jsonl", "poisonedrag.jsonl", "injections_bipia.jsonl"]
TENANTS = ("acme", "globex", "initech")
FIELDS = FieldMap(text="text", tenant="tenant", doc_id="doc_id")


@pytest.fixture(scope="module")
def export_20k(tmp_path_factory: pytest.TempPathFactory, embed: Any) -> str:
    """20,000 points in a Parquet export of 4,096-row row groups: the 1,290 shipped real passages embedded with the
    real model (a swapped vector, a zeroed one and two texts under one document id among them), and generated
    records around their embeddings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [(name, json.loads(line)) for name in REAL for line in (DATA / name).read_text("utf-8").splitlines()
            if line.strip()]
    texts = [str(r["text"]) for _, r in rows]
    real = embed(texts).copy()
    real[3], real[4] = real[4].copy(), real[3].copy()
    real[10] = 0.0
    rng = np.random.default_rng(18)
    n_gen = N - len(real)
    centers = real[rng.integers(0, len(real), size=n_gen)]
    generated = centers + rng.standard_normal(centers.shape).astype(np.float32) * 0.02
    generated /= np.linalg.norm(generated, axis=1, keepdims=True)
    items = ["valves", "bearings", "cables", "pumps", "filters", "gaskets", "sensors", "rotors"]
    cities = ["Leeds", "Porto", "Graz", "Tampere", "Gdansk", "Lyon", "Bilbao", "Aarhus"]
    gen_texts = [f"Inventory record {i}: {int(rng.integers(1, 900))} {items[i % 8]} shipped from "
                 f"{cities[(i // 8) % 8]} on day {int(rng.integers(1, 365))}." for i in range(n_gen)]
    vectors = np.concatenate([real, generated.astype(np.float32)])
    all_texts = texts + gen_texts
    ids = rng.permutation(np.arange(1, 3 * N, 3))[:N]
    tenants = [TENANTS[REAL.index(name) % 3] for name, _ in rows] + [TENANTS[i % 3] for i in range(n_gen)]
    table = pa.table({
        "id": pa.array(ids.astype(np.int64)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]),
        "text": all_texts, "tenant": tenants, "doc_id": [f"doc-{min(i, 21)}" for i in range(N)],
    })
    path = tmp_path_factory.mktemp("export") / "export.parquet"
    pq.write_table(table, path, row_group_size=4096)
    return f"file://{path}?distance=cosine"


def _scan(uri: str, ledger_url: str, ray: bool, skip: tuple[str, ...] = ()) -> tuple[ScanResult, Ledger]:
    detectors = select_detectors(detector_classes(), Config(), (), skip)
    options = ScanOptions(field_map=FIELDS, settings=ScanSettings(tenants=TENANTS, embed_sample="300"),
                          show_progress=False)
    ledger = Ledger(ledger_url).open()
    with connector_for(uri, collection="docs") as conn:
        scanner = RayScanner(ledger, conn, detectors, options, RayOptions()) if ray else Scanner(
            ledger, conn, detectors, options)
        return scanner.run(), ledger


def _answers(result: ScanResult) -> list[tuple[str, str, str]]:
    return sorted((r.finding.rule.id, point_key(r.finding.point_id) if r.finding.point_id is not None else "-",
                   r.finding.effective_severity.value) for r in result.findings)


@pytest.mark.slow
def test_ray_engine_records_the_in_process_findings_on_20k_points(
    ray_cluster: Any, export_20k: str, tmp_path: Path
) -> None:
    # misfiled runs on the driver over the same point table in both engines, and costs a minute on 2 cores here
    local, _ = _scan(export_20k, f"sqlite:///{tmp_path / 'local.db'}", ray=False, skip=("misfiled",))
    clear_encoding_cache()  # the actors re-embed, not this process's cache of the in-process scan's encodings
    on_ray, _ = _scan(export_20k, f"sqlite:///{tmp_path / 'ray.db'}", ray=True, skip=("misfiled",))
    assert local.status == on_ray.status == "completed", (local.error, on_ray.error)
    assert local.points_scanned == on_ray.points_scanned == N
    assert _answers(on_ray) == _answers(local)
    rules = {r.finding.rule.id for r in local.findings}
    assert {"VA102", "VA106", "VA301", "VA531", "VA517"} <= rules, rules  # VA5xx: found on the workers
    for key in ("points", "findings", "new", "changed", "deleted", "by_detector", "by_severity", "alerts"):
        assert on_ray.counts[key] == local.counts[key], key
    assert on_ray.exit_code() == local.exit_code()
    partitions = next(n for n in on_ray.notes if n.startswith("ray engine: pass 1 on "))
    assert "5 partitions" in partitions and "injection" in partitions  # pass 1 really ran on the workers
    note = r"ray engine: re-embedded 2\d\d texts on 2 CPU actor\(s\) \(cpu, (fp32|bf16)\) in .* texts/s"
    assert any(re.match(note, n) for n in on_ray.notes), [n for n in on_ray.notes if "embed" in n]


def _demo_table(args: list[str]) -> Any:
    return CliRunner().invoke(cli, ["-q", "scan", *args], catch_exceptions=False)


@pytest.mark.slow
def test_demo_store_findings_table_is_the_same_on_ray(ray_cluster: Any, embed: Any, tmp_path: Path) -> None:
    from auditor import demo

    store = demo.build_store(tmp_path / "demo", embed)
    demo.plant_attacks(store, embed)
    common = [store.uri, "-c", "docs", "--text-field", "text", "--tenant-field", "tenant", "--doc-id-field", "doc_id",
              "--tenants", ",".join(TENANTS), "--exit-zero"]
    local = _demo_table([*common, "--ledger", f"sqlite:///{tmp_path / 'a.db'}"])
    on_ray = _demo_table([*common, "--ledger", f"sqlite:///{tmp_path / 'b.db'}", "--engine", "ray"])
    assert local.exit_code == on_ray.exit_code == 0, on_ray.output
    assert local.stdout.count("\n") > 20 and "VA201" not in local.stdout  # a baseline: the planted store as found
    assert on_ray.stdout == local.stdout
