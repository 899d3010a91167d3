"""Quarantine test helpers: a real store with planted attacks, its scan, confirmed findings, and invariants
("every point in exactly one place, bit-identical to its original")."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from conftest import load_jsonl
from sqlalchemy import select
from support import build_qdrant_store, run_scan

from auditor.backupcrypt import KEY_ENV, KEY_FILE_ENV, new_key
from auditor.findings import point_key
from auditor.ledger import Ledger
from auditor.ledger import repository as repo
from auditor.ledger.models import FindingRow
from auditor.types import FieldMap

FIELD_MAP = FieldMap(text="text", tenant="tenant", doc_id="doc_id")
QUARANTINE = "docs__quarantine"
FLAG = "vecaudit_quarantine"
# Planted attacks (point id -> what): each is flagged by the integrity detector and confirmed by a reviewer.
HIJACKED_VECTOR = 36  # PoisonedRAG text stored under a popular passage's vector (VA105, with point 0)
NO_TENANT = 37  # PoisonedRAG text written without a tenant label (VA108)
DOC_ID_CLASH = 38  # PoisonedRAG text reusing point 1's doc_id (VA106, with point 1)
POISONS = (HIJACKED_VECTOR, NO_TENANT, DOC_ID_CLASH)
Snapshot = dict[str, dict[Any, tuple[dict[str, bytes], dict[str, Any]]]]
T = TypeVar("T")
Template = tuple[Path, Path, T]  # (work folder, pristine copy, what the build returned)


@dataclass
class Case:
    uri: str
    path: Path
    ledger_url: str
    scan_id: int
    confirmed: dict[int, int]  # point id -> confirmed finding id
    open_findings: dict[int, int]  # point id -> an unconfirmed finding id
    original: Snapshot


def fixed_point_vector(dim: int, seed: int) -> np.ndarray:
    """A unit vector every normalisation maps onto itself, whatever the CPU: 64 components of +-1/8 (the rest 0),
    so every partial sum of squares is exact and the norm is exactly 1."""
    rng = np.random.default_rng(seed)
    v = np.zeros(dim, dtype=np.float32)
    v[rng.choice(dim, 64, replace=False)] = rng.choice(np.array([-0.125, 0.125], dtype=np.float32), 64)
    return v


def moved_point_vector(dim: int, seed: int) -> np.ndarray:
    """A vector no normalisation leaves alone, on any CPU: norm 5 (components 3 and 4 at random places)."""
    rng = np.random.default_rng(seed)
    v = np.zeros(dim, dtype=np.float32)
    i, j = rng.choice(dim, 2, replace=False)
    v[i], v[j] = 3.0, -4.0
    return v


def build_case(tmp_path: Path, embed: Any, *, distance: str = "cosine", ledger_url: str | None = None) -> Case:
    """40 real HotpotQA passages plus PoisonedRAG poisons planted three ways, scanned and reviewed. The three
    poisons' vectors: a real MiniLM one, one that is a fixed point of normalisation and one that is not."""
    clean = load_jsonl("hotpotqa_retrieved.jsonl")[:36]
    poisons = load_jsonl("poisonedrag.jsonl")[:4]
    texts = [r["text"] for r in clean] + [r["text"] for r in poisons]
    vectors = embed(texts).copy()
    payloads: list[dict[str, Any]] = [
        {"text": r["text"], "tenant": "acme", "doc_id": r["id"]} for r in [*clean, *poisons]
    ]
    vectors[HIJACKED_VECTOR] = vectors[0]
    vectors[NO_TENANT] = fixed_point_vector(vectors.shape[1], NO_TENANT)
    vectors[DOC_ID_CLASH] = moved_point_vector(vectors.shape[1], DOC_ID_CLASH)
    del payloads[NO_TENANT]["tenant"]
    payloads[DOC_ID_CLASH]["doc_id"] = payloads[1]["doc_id"]
    store = tmp_path / "store"
    uri = build_qdrant_store(store, vectors, payloads, distance=distance)
    if ledger_url is None:
        ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        fresh = Ledger(ledger_url)
        fresh.upgrade()
        fresh.dispose()
    result = run_scan(uri, ledger_url, detectors=["integrity"], field_map=FIELD_MAP)
    assert result.status == "completed"
    by_point: dict[int, list[int]] = {}
    for rec in result.findings:
        by_point.setdefault(int(rec.finding.point_id or 0), []).append(rec.row_id)
    assert set(POISONS) <= set(by_point), by_point
    assert {0, 1} <= set(by_point)
    ledger = Ledger(ledger_url).open()
    confirmed = {}
    with ledger.session() as s:
        for pid in POISONS:
            fid = by_point[pid][0]
            repo.add_review(s, finding_id=fid, reviewer="alice", verdict="confirmed", note="planted poison")
            confirmed[pid] = fid
    ledger.dispose()
    return Case(
        uri=uri,
        path=store,
        ledger_url=ledger_url,
        scan_id=result.scan_id,
        confirmed=confirmed,
        open_findings={0: by_point[0][0], 1: by_point[1][0]},
        original=snapshot(uri),
    )


def snapshot(uri: str) -> Snapshot:
    """Every collection of the store: ``{collection: {id: ({vector name: float32 bytes}, payload)}}``."""
    from qdrant_client import QdrantClient

    client = QdrantClient(path=uri.removeprefix("qdrant+local://"))
    try:
        out: Snapshot = {}
        for c in client.get_collections().collections:
            points: dict[Any, tuple[dict[str, bytes], dict[str, Any]]] = {}
            offset = None
            while True:
                recs, offset = client.scroll(c.name, limit=256, offset=offset, with_vectors=True, with_payload=True)
                for r in recs:
                    vec = r.vector
                    named = vec if isinstance(vec, dict) else {"": vec}
                    points[r.id] = (
                        {k: np.asarray(v, dtype="<f4").tobytes() for k, v in named.items()},
                        dict(r.payload or {}),
                    )
                if offset is None:
                    break
            out[c.name] = points
        return out
    finally:
        client.close()


def assert_quarantined(uri: str, original: Snapshot, ids: Sequence[int], mode: str) -> None:
    """The ``ids`` are quarantined (flagged in place, or only in the quarantine collection) and every point,
    quarantined or not, is in exactly one place with its original vectors and payload (flag aside)."""
    now = snapshot(uri)
    live, side = now["docs"], now.get(QUARANTINE, {})
    for pid, (vectors, payload) in original["docs"].items():
        if pid in ids:
            holder = live if mode == "tag" else side
            other = side if mode == "tag" else live
            assert pid in holder and pid not in other, (pid, mode)
            got_vectors, got_payload = holder[pid]
            assert got_vectors == vectors, f"point {pid}: vector bits changed"
            assert FLAG in got_payload and got_payload[FLAG]["finding_ids"], got_payload
            assert {k: v for k, v in got_payload.items() if k != FLAG} == payload
        else:
            assert live.get(pid) == (vectors, payload), f"untouched point {pid} changed"
            assert pid not in side
    assert set(side) <= set(ids)


def assert_restored(uri: str, original: Snapshot) -> None:
    """The live collection equals the original bit for bit; the quarantine collection (if any) is empty."""
    now = snapshot(uri)
    assert now["docs"] == original["docs"]
    assert not now.get(QUARANTINE)


def findings_of(ledger_url: str, point_id: int) -> list[FindingRow]:
    ledger = Ledger(ledger_url).open()
    try:
        with ledger.session() as s:
            rows = list(s.scalars(select(FindingRow).where(FindingRow.point_key == point_key(point_id))))
            for r in rows:
                s.expunge(r)
            return rows
    finally:
        ledger.dispose()


@pytest.fixture
def backup_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh backup key in ``VECAUDIT_QUARANTINE_KEY`` for this test (and the CLI processes it starts)."""
    key = new_key().decode("ascii")
    monkeypatch.setenv(KEY_ENV, key)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    return key


def run_cli(args: Sequence[str], *, fault: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``vecaudit ARGS`` in a fresh interpreter (optionally killed by SIGKILL right after step ``fault``)."""
    env = dict(os.environ)
    env.pop("VECAUDIT_FAULT_AFTER", None)
    if fault:
        env["VECAUDIT_FAULT_AFTER"] = fault
    env.setdefault("HF_HUB_OFFLINE", "1")
    return subprocess.run(
        [sys.executable, "-c", "from auditor.cli.main import main; main()", "-q", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def keep_pristine(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], T]) -> Template[T]:
    """Build a case once, at a fixed path (the ledger records the store's path), and keep a pristine copy."""
    base = tmp_path_factory.mktemp(name)
    work = base / "case"
    work.mkdir()
    built = build(work)
    pristine = base / "pristine"
    shutil.copytree(work, pristine)
    return work, pristine, built


def fresh_copy(template: Template[T]) -> T:
    """The case's store and ledger as they were built, at the same path."""
    work, pristine, built = template
    shutil.rmtree(work)
    shutil.copytree(pristine, work)
    return built


@pytest.fixture(scope="module")
def case_template(tmp_path_factory: pytest.TempPathFactory, embed: Any) -> Template[Case]:
    """Build and scan the store once per module, and keep a pristine copy of it."""
    return keep_pristine(tmp_path_factory, "quarantine", lambda work: build_case(work, embed))


@pytest.fixture
def case(case_template: Template[Case]) -> Case:
    """A fresh copy of the scanned store and ledger at the same path."""
    return fresh_copy(case_template)
