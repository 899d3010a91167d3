"""Drift detector on real text and the real model: no alarm when a tenant grows from its own distribution,
VA601 when a tenant's content moves to another domain, VA602 when a mass of near-identical points arrives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import load_jsonl
from support import build_qdrant_store, run_scan

from detectors.drift import DriftDetector, mmd_permutation_test

DETECTORS = ["drift", "integrity"]


@pytest.fixture(scope="module")
def texts(embed):  # type: ignore[no-untyped-def]
    wiki = [r["text"] for r in load_jsonl("wikipedia_en.jsonl")[:150]]
    pubmed = [r["text"] for r in load_jsonl("pubmed.jsonl")[:100]]
    code = [r["text"] for r in load_jsonl("code.jsonl")[:60]]
    base = load_jsonl("poisonedrag.jsonl")[0]["text"]
    burst = [f"{base} (mirror {i})" for i in range(25)]
    vectors = embed(wiki + pubmed + code + burst)
    parts: dict[str, Any] = {}
    start = 0
    for name, group in (("wiki", wiki), ("pubmed", pubmed), ("code", code), ("burst", burst)):
        parts[name] = (group, vectors[start : start + len(group)])
        start += len(group)
    return parts


def _upsert(uri: str, start_id: int, texts: list[str], vectors: np.ndarray, tenant: str) -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=uri.removeprefix("qdrant+local://"))
    client.upsert(
        "docs",
        points=[
            models.PointStruct(id=start_id + i, vector=v.tolist(), payload={"text": t, "tenant": tenant})
            for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
        ],
    )
    client.close()


def _store(tmp_path: Path, texts: dict[str, Any]) -> str:
    wiki_t, wiki_v = texts["wiki"]
    pub_t, pub_v = texts["pubmed"]
    payloads = [{"text": t, "tenant": "acme"} for t in wiki_t[:100]] + [
        {"text": t, "tenant": "globex"} for t in pub_t[:70]
    ]
    return build_qdrant_store(tmp_path / "store", np.vstack([wiki_v[:100], pub_v[:70]]), payloads)


def _drift(result: Any) -> dict[str | None, Any]:
    return {r.finding.tenant: r.finding for r in result.findings if r.finding.rule_id == "VA601"}


def test_growth_from_the_same_distribution_is_not_drift(tmp_path: Path, sqlite_ledger_url: str, texts) -> None:  # type: ignore[no-untyped-def]
    uri = _store(tmp_path, texts)
    first = run_scan(uri, sqlite_ledger_url, detectors=DETECTORS)
    assert not [r for r in first.findings if r.finding.detector == "drift"]
    assert any("this scan is the reference" in n for n in first.notes)
    wiki_t, wiki_v = texts["wiki"]
    pub_t, pub_v = texts["pubmed"]
    _upsert(uri, 1000, wiki_t[100:150], wiki_v[100:150], "acme")  # +50% more encyclopedia articles
    _upsert(uri, 2000, pub_t[70:100], pub_v[70:100], "globex")  # +43% more abstracts
    second = run_scan(uri, sqlite_ledger_url, detectors=DETECTORS)
    assert second.status == "completed"
    assert not [r for r in second.findings if r.finding.detector == "drift"]


def test_tenant_moving_to_another_domain_is_drift(tmp_path: Path, sqlite_ledger_url: str, texts) -> None:  # type: ignore[no-untyped-def]
    uri = _store(tmp_path, texts)
    run_scan(uri, sqlite_ledger_url, detectors=DETECTORS)
    code_t, code_v = texts["code"]
    _upsert(uri, 3000, code_t, code_v, "acme")  # acme's store fills with programming answers
    second = run_scan(uri, sqlite_ledger_url, detectors=DETECTORS)
    drift = _drift(second)
    assert set(drift) == {"acme"}
    finding = drift["acme"]
    assert finding.point_id is None and finding.score >= finding.threshold
    ev = finding.evidence
    assert ev["mmd2"] > ev["null_quantile_999"] and ev["p_value"] <= 0.001
    assert ev["count_before"] == 100 and ev["count_now"] == 160 and ev["since_scan"] == second.scan_id - 1
    assert ev["centroid_cosine_distance"] > 0.01
    assert second.exit_code() == 0  # medium severity: below the default --fail-on high


def test_mass_of_new_near_identical_points_is_an_ingestion_burst(tmp_path: Path, sqlite_ledger_url: str, texts) -> None:  # type: ignore[no-untyped-def]
    uri = _store(tmp_path, texts)
    first = run_scan(uri, sqlite_ledger_url, detectors=DETECTORS)
    assert not [r for r in first.findings if r.finding.rule_id == "VA602"]  # baseline: no burst judged
    burst_t, burst_v = texts["burst"]
    wiki_t, wiki_v = texts["wiki"]
    _upsert(uri, 5000, burst_t, burst_v, "globex")
    _upsert(uri, 6000, wiki_t[100:130], wiki_v[100:130], "acme")  # ordinary new documents alongside
    second = run_scan(uri, sqlite_ledger_url, detectors=DETECTORS)
    bursts = [r.finding for r in second.findings if r.finding.rule_id == "VA602"]
    assert len(bursts) == 1
    ev = bursts[0].evidence
    assert ev["size"] == 25 and ev["tenants"] == {"globex": 25}
    assert set(ev["points"]) <= set(range(5000, 5025)) and len(ev["points"]) == 20
    assert ev["mean_cosine"] >= 0.97 and bursts[0].tenant == "globex"
    assert second.exit_code() == 1  # high severity


def test_permutation_test_is_calibrated_on_random_splits(texts) -> None:  # type: ignore[no-untyped-def]
    """Under no drift the p-value is uniform: at alpha 0.05, about 5% of random splits are rejected."""
    _, wiki_v = texts["wiki"]
    unit = wiki_v / np.linalg.norm(wiki_v, axis=1, keepdims=True)
    rng = np.random.default_rng(7)
    rejected = 0
    trials = 60
    for _ in range(trials):
        order = rng.permutation(len(unit))
        _, _, p = mmd_permutation_test(unit[order[:75]], unit[order[75:]], permutations=199, rng=rng)
        rejected += p <= 0.05
    assert rejected <= 9  # binomial(60, 0.05): P(X > 9) < 0.2%


def test_drift_parameters_are_validated() -> None:
    from auditor.context import ScanContext
    from auditor.errors import DetectorError
    from auditor.types import CollectionInfo, Distance, FieldMap

    ctx = ScanContext(info=CollectionInfo("c", 4, Distance.COSINE, 0), field_map=FieldMap(), collection_key="k")
    with pytest.raises(DetectorError, match="permutations"):
        DriftDetector(alpha=0.001, permutations=100).begin(ctx)
    ctx.close()
