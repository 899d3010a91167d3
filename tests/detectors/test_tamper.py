"""vector-text-mismatch on a real Qdrant local store of real Wikipedia text embedded by the real model: swapped,
query-replaced and noise-perturbed vectors are flagged, clean ones are not, a foreign model gives one finding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import load_jsonl
from support import build_qdrant_store, run_scan

from auditor.context import ScanSettings
from auditor.errors import ConfigError
from auditor.types import FieldMap
from detectors.tamper import sample_size

N = 100


@pytest.fixture(scope="module")
def corpus(embed: Any) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    rows = load_jsonl("wikipedia_en.jsonl")[:N]
    questions = [r["question"] for r in load_jsonl("poisonedrag.jsonl")[:10]]
    return rows, embed([r["text"] for r in rows]), embed(questions)


def _perturb(v: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at exactly ``cosine`` to ``v``: v plus orthogonal noise."""
    noise = rng.standard_normal(v.shape).astype(np.float32)
    noise -= (noise @ v) * v
    noise /= np.linalg.norm(noise)
    out = cosine * v + np.sqrt(1 - cosine**2) * noise
    return (out / np.linalg.norm(out)).astype(np.float32)


def _scan(tmp_path: Path, url: str, vectors: np.ndarray, rows: list[dict[str, Any]],
          params: dict[str, Any] | None = None, **settings: Any) -> Any:
    payloads = [{"text": r["text"], "tenant": "acme"} for r in rows]
    uri = build_qdrant_store(tmp_path / "store", vectors, payloads)
    return run_scan(uri, url, detectors=["vector-text-mismatch"], field_map=FieldMap(text="text", tenant="tenant"),
                    settings=ScanSettings(**settings), params={"vector-text-mismatch": params or {}})


def test_planted_tampering_is_found_and_clean_points_are_not(
    tmp_path: Path, corpus: Any, sqlite_ledger_url: str
) -> None:
    rows, vecs, questions = corpus
    rng = np.random.default_rng(7)
    vecs = vecs.copy()
    vecs[[3, 4]] = vecs[[4, 3]]  # swapped pair
    vecs[10] = questions[0]  # retrieval targeting: vector replaced by a query's embedding
    vecs[11] = questions[1]
    for i in (20, 21, 22):
        vecs[i] = _perturb(vecs[i], 0.9, rng)
    result = _scan(tmp_path, sqlite_ledger_url, vecs, rows)
    assert result.status == "completed"
    flagged = {r.finding.point_id for r in result.findings if r.finding.rule_id == "VA501"}
    assert flagged == {3, 4, 10, 11, 20, 21, 22}
    assert not [r for r in result.findings if r.finding.rule_id == "VA502"]
    swapped = next(r.finding for r in result.findings if r.finding.point_id == 3)
    assert swapped.evidence["closest_text_point"] == 4  # evidence names where the vector came from
    assert swapped.score >= swapped.threshold
    assert any("re-embedded all 100 of 100 points" in n for n in result.notes)


def test_foreign_model_gives_one_collection_finding(tmp_path: Path, corpus: Any, sqlite_ledger_url: str) -> None:
    rows, vecs, _ = corpus
    # Another model of the same dimension: a fixed random rotation of the space keeps geometry, not agreement.
    rotation, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((vecs.shape[1], vecs.shape[1])))
    foreign = (vecs @ rotation).astype(np.float32)
    result = _scan(tmp_path, sqlite_ledger_url, foreign, rows, {"calibration_points": 40})
    findings = [r.finding for r in result.findings]
    assert [(f.rule_id, f.point_id) for f in findings] == [("VA502", None)]
    assert findings[0].evidence["median_agreement"] < 0.3


def test_other_dimension_gives_one_collection_finding(tmp_path: Path, corpus: Any, sqlite_ledger_url: str) -> None:
    rows, vecs, _ = corpus
    small = np.ascontiguousarray(vecs[:40, :128])
    result = _scan(tmp_path, sqlite_ledger_url, small, rows[:40])
    findings = [r.finding for r in result.findings]
    assert [(f.rule_id, f.evidence["model_dim"]) for f in findings] == [("VA502", 384)]


def test_sample_bound_is_seeded_and_said(tmp_path: Path, corpus: Any, sqlite_ledger_url: str) -> None:
    rows, vecs, _ = corpus
    vecs = vecs.copy()
    vecs[85:] = np.roll(vecs[85:], 1, axis=0)  # the last 15 vectors tampered (rotated among themselves)
    result = _scan(tmp_path, sqlite_ledger_url, vecs, rows, embed_sample="40", seed=3)
    note = next(n for n in result.notes if n.startswith("vector-text-mismatch: re-embedded"))
    assert "seeded random sample (seed 3) of 40 of 100 points" in note
    flagged = {r.finding.point_id for r in result.findings}
    assert flagged and all(pid >= 85 for pid in flagged)


def test_sample_size_parsing() -> None:
    assert sample_size(None, 50_000) == 10_000
    assert sample_size("all", 50_000) == 50_000
    assert sample_size("0.1", 50_000) == 5_000
    assert sample_size("1.0", 50_000) == 50_000
    assert sample_size("1", 50_000) == 1
    assert sample_size("200", 100) == 100
    for bad in ("-3", "ten", "2.5", "0"):
        with pytest.raises(ConfigError):
            sample_size(bad, 100)


def test_text_with_nul_characters_is_re_embedded_as_the_model_read_it(
    tmp_path: Path, corpus: Any, sqlite_ledger_url: str, embed: Any
) -> None:
    """A page stored as UTF-16 read as UTF-8 carries a NUL after every character; the scan escapes them (VA110,
    integrity), and the model that embedded the page dropped them as control characters: its faithful vector is no
    tampering. A swapped vector beside it still is."""
    rows, vecs, _ = corpus
    rows = [dict(r) for r in rows]
    text = rows[30]["text"]
    half = len(text) // 2
    rows[30]["text"] = text[:half] + "".join(c + "\x00" for c in text[half:])
    vecs = vecs.copy()
    vecs[30] = embed([rows[30]["text"]])[0]
    vecs[[5, 6]] = vecs[[6, 5]]
    result = _scan(tmp_path, sqlite_ledger_url, vecs, rows)
    flagged = {r.finding.point_id for r in result.findings if r.finding.rule_id == "VA501"}
    assert flagged == {5, 6}
