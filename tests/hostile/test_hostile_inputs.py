"""Hostile-input suite: small real stores (Qdrant local, JSONL, Parquet, NPZ) holding malformed or hostile data,
each scanned through the CLI into a temporary SQLite ledger.

For every case: the documented exit code; a completed scan reports the rules named, or a failed one prints one
``error:`` line naming where (the line, the column, the array) and how to fix it; never a traceback or an
"internal error"; and the store's files are byte-for-byte the same afterwards (scans never write).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from support import build_qdrant_store

from auditor.cli.main import cli
from auditor.textsafety import safe_id

DIM = 8
N = 24
TEXTS = [json.loads(line)["text"] for line in (Path(__file__).parents[1] / "data" / "wikipedia_en.jsonl").open()][:N]
VECTORS = np.random.default_rng(11).standard_normal((N, DIM)).astype(np.float32)
ANSI = "\x1b[2J\x1b[31mred\x1b[0m\x07\x08"
BIG_TEXT = ("All work and no play makes Jack a dull boy. " * 120_000)[: 5 * 1024 * 1024]


def long_rows() -> list[dict[str, Any]]:
    """Ids and tenant labels longer than any ledger column: a 1 MB string id, an integer beyond 64 bits, 200
    characters that JSON escapes to 1,200, a 5,000-character tenant label."""
    return rows(r1={"id": "y" * 1_000_000}, r2={"id": 2**70}, r3={"id": "é" * 200}, r4={"tenant": "t" * 5000},
                r5={"tenant": "t" * 5000 + "2"})


def rows(**override: dict[str, Any]) -> list[dict[str, Any]]:
    """N JSON-ready rows ``{"id", "vector", "text", "tenant"}``; ``override={"3": {...}}`` replaces keys of row 3."""
    out = [{"id": i, "vector": VECTORS[i].tolist(), "text": TEXTS[i], "tenant": "acme"} for i in range(N)]
    for index, changes in override.items():
        out[int(index.lstrip("r"))].update(changes)
    return out


# -- store writers: each returns the source URI of what it wrote under ``path`` -------------------------------
def jsonl(lines: Sequence[dict[str, Any] | bytes]) -> Callable[[Path], str]:
    def build(path: Path) -> str:
        path.mkdir()
        data = b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)
        (path / "dump.jsonl").write_bytes(data)
        return f"file://{path / 'dump.jsonl'}"

    return build


def raw_file(name: str, data: bytes) -> Callable[[Path], str]:
    def build(path: Path) -> str:
        path.mkdir()
        (path / name).write_bytes(data)
        return f"file://{path / name}"

    return build


def parquet(table: Callable[[], pa.Table], *, truncate: bool = False) -> Callable[[Path], str]:
    def build(path: Path) -> str:
        path.mkdir()
        pq.write_table(table(), path / "dump.parquet")
        if truncate:
            data = (path / "dump.parquet").read_bytes()
            (path / "dump.parquet").write_bytes(data[: len(data) // 2])
        return f"file://{path / 'dump.parquet'}"

    return build


def npz(arrays: Callable[[], dict[str, np.ndarray]], *, truncate: bool = False) -> Callable[[Path], str]:
    def build(path: Path) -> str:
        path.mkdir()
        np.savez(path / "dump.npz", **arrays())  # type: ignore[arg-type]
        if truncate:
            data = (path / "dump.npz").read_bytes()
            (path / "dump.npz").write_bytes(data[: len(data) * 2 // 3])
        return f"file://{path / 'dump.npz'}"

    return build


def qdrant(
    payloads: Callable[[], list[dict[str, Any]]], *, vectors: np.ndarray = VECTORS, ids: list[Any] | None = None,
    validate: bool = True,
) -> Callable[[Path], str]:
    def build(path: Path) -> str:
        return build_qdrant_store(path, vectors, payloads(), ids=ids, validate=validate)

    return build


def qdrant_empty(path: Path) -> str:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(path))
    client.create_collection("docs", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    client.close()
    return f"qdrant+local://{path}"


def payloads(**override: dict[str, Any]) -> Callable[[], list[dict[str, Any]]]:
    def make() -> list[dict[str, Any]]:
        out = [{"text": TEXTS[i], "tenant": "acme"} for i in range(N)]
        for index, changes in override.items():
            out[int(index.lstrip("r"))].update(changes)
        return out

    return make


def binary_as_string(values: list[bytes]) -> pa.Array:
    """A string column holding exactly these bytes (what a writer that skips UTF-8 validation leaves)."""
    return pa.Array.from_buffers(pa.string(), len(values), pa.array(values, pa.binary()).buffers())


def arrow_table(**columns: Any) -> Callable[[], pa.Table]:
    def make() -> pa.Table:
        base: dict[str, Any] = {"id": list(range(N)), "vector": [v.tolist() for v in VECTORS], "text": TEXTS,
                                "tenant": ["acme"] * N}
        base.update({k: (v() if callable(v) else v) for k, v in columns.items()})
        return pa.table(base)

    return make


def npz_arrays(**arrays: Any) -> Callable[[], dict[str, np.ndarray]]:
    def make() -> dict[str, np.ndarray]:
        base: dict[str, np.ndarray] = {"vectors": VECTORS, "ids": np.arange(N), "text": np.array(TEXTS),
                                       "tenant": np.array(["acme"] * N)}
        base.update({k: (v() if callable(v) else v) for k, v in arrays.items()})
        return base

    return make


def _with(array: np.ndarray, index: int, value: Any) -> np.ndarray:
    out = array.copy()
    out[index] = value
    return out


# -- the table ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One hostile store: the scan must exit ``exit``; a completed scan reports ``rules`` as ``{rule: points}``
    (``None`` = a collection-level finding); a failed one prints one error line holding every ``error`` part."""

    name: str
    build: Callable[[Path], str]
    exit: int
    rules: dict[str, set[Any]] = field(default_factory=dict)
    error: tuple[str, ...] = ()
    detectors: tuple[str, ...] = ("integrity", "provenance")
    args: tuple[str, ...] = ("--text-field", "text", "--tenant-field", "tenant")
    points: int | None = N


CASES = [
    # A2: text no UTF-8 encoder accepts, anywhere, never blinds the scan
    Case("qdrant-lone-surrogates", qdrant(payloads(r3={"meta": {"tags": ["ok", "x\ud800"]}},
                                                   r5={"text": TEXTS[5] + "\udc80"}, r6={"k\udfffey": 1},
                                                   r8={"tenant": "acme\x00"})),
         1, {"VA110": {3, 5, 6, 8}}),
    Case("jsonl-surrogate-escapes", jsonl([*rows(r2={"meta": "x\\ud800"})[:2],
                                           b'{"id": 2, "vector": [0.5, 0, 0, 0, 0, 0, 0, 0], "text": "a\\udc80b", '
                                           b'"tenant": "acme", "n\\ud800": 1}', *rows()[3:]]),
         1, {"VA110": {2}}),
    Case("jsonl-invalid-utf8", jsonl([*rows()[:4], b'{"id": 4, "vector": [1, 0, 0, 0, 0, 0, 0, 0], '
                                                   b'"text": "caf\xe9 \xff\xfe", "tenant": "acme"}', *rows()[5:]]),
         1, {"VA110": {4}}),
    Case("parquet-invalid-utf8", parquet(arrow_table(
        text=lambda: binary_as_string([t.encode() if i != 7 else b"bad \xff" for i, t in enumerate(TEXTS)]),
        id=lambda: binary_as_string([f"p{i}".encode() if i != 9 else b"p\xfe9" for i in range(N)]))),
         1, {"VA110": {"p7", "p\\udcfe9"}}),
    Case("npz-surrogate-and-invalid-utf8", npz(npz_arrays(
        text=lambda: _with(np.array(TEXTS), 4, "lone \ud800"),
        tenant=lambda: np.array([b"acme"] * (N - 1) + [b"ac\xffme"]))),
         1, {"VA110": {4, N - 1}}),
    Case("jsonl-nul-control-and-ansi", jsonl(rows(r1={"text": TEXTS[1] + ANSI, "tenant": "acme" + ANSI},
                                                  r2={"id": "id" + ANSI}, r3={"text": "nul\x00byte"})),
         1, {"VA110": {3}}),
    Case("qdrant-ansi-and-control", qdrant(payloads(r1={"text": ANSI + TEXTS[1]}, r2={"tenant": ANSI})), 0),
    # NaN / Inf
    Case("qdrant-nan-inf", qdrant(payloads(), vectors=_with(_with(VECTORS, 2, np.nan), 3, np.inf), validate=False),
         1, {"VA101": {2, 3}}),
    Case("jsonl-nan-inf", jsonl([*rows()[:5], b'{"id": 5, "vector": [NaN, 1, 0, 0, 0, 0, 0, 0], "text": "x"}',
                                 b'{"id": 6, "vector": [Infinity, 1, 0, 0, 0, 0, 0, 0], "text": "y"}',
                                 b'{"id": 7, "vector": [1e39, 1, 0, 0, 0, 0, 0, 0], "text": "z"}', *rows()[8:]]),
         1, {"VA101": {5, 6, 7}}),
    Case("parquet-nan-inf", parquet(arrow_table(vector=lambda: [([float("nan")] * DIM if i == 1 else v.tolist())
                                                                for i, v in enumerate(VECTORS)])),
         1, {"VA101": {1}}),
    Case("npz-nan-inf", npz(npz_arrays(vectors=lambda: _with(VECTORS, 0, -np.inf))), 1, {"VA101": {0}}),
    # A5: mixed dimensions; the odd row is flagged, never the majority
    Case("jsonl-odd-first-row-dimension", jsonl(rows(r0={"vector": [1.0, 2.0, 3.0]})), 1, {"VA103": {0}}),
    Case("parquet-mixed-dimensions", parquet(arrow_table(
        vector=lambda: [(v.tolist()[:3] if i in (0, 5) else v.tolist()) for i, v in enumerate(VECTORS)])),
         1, {"VA103": {0, 5}}),
    # vectors that are not lists of numbers
    Case("jsonl-vectors-as-strings", jsonl(rows(r1={"vector": json.dumps(VECTORS[1].tolist())},
                                                r2={"vector": ["a", "b"]}, r3={"vector": None},
                                                r4={"vector": [[1.0, 2.0]]}, r5={"vector": {"x": 1}})),
         1, {"VA103": {1, 2, 3, 4, 5}}),
    Case("jsonl-row-without-vector-key", jsonl([{k: v for k, v in r.items() if k != "vector" or r["id"] != 6}
                                                for r in rows()]), 1, {"VA103": {6}}),
    Case("parquet-vectors-as-strings", parquet(arrow_table(vector=lambda: [json.dumps(v.tolist()) for v in VECTORS]),),
         2, error=("no vector column", "vector (string)", "re-export")),
    Case("npz-vectors-as-strings", npz(npz_arrays(vectors=lambda: VECTORS.astype(str))),
         2, error=("array 'vectors'", "not floats")),
    # odd id types
    Case("jsonl-odd-ids", jsonl(rows(r0={"id": 1.5}, r1={"id": {"nested": [1]}}, r2={"id": 2**100},
                                     r3={"id": "6f1e1fa0-6a48-4c55-9d4e-3b1b0c6b1a52"}, r4={"id": -5},
                                     r5={"id": None}, r6={"id": True}, r7={"id": 7.0}, r8={"id": [1, 2]})),
         0, {"VA112": {"1.5", '{"nested": [1]}', str(2**100), "null", "true", "[1, 2]"}}),
    Case("jsonl-huge-ids-and-tenant-labels", jsonl(long_rows()), 0,
         {"VA112": {safe_id("y" * 1_000_000)[0], safe_id(2**70)[0], safe_id("é" * 200)[0]}}),
    Case("parquet-float-ids", parquet(arrow_table(id=lambda: [i + 0.5 if i == 3 else float(-i) for i in range(N)])),
         0, {"VA112": {"3.5"}}),
    Case("npz-float-ids", npz(npz_arrays(ids=lambda: np.arange(N) * 1.5)), 0,
         {"VA112": {json.dumps(i * 1.5) for i in range(1, N, 2)}}),
    Case("qdrant-uuid-ids", qdrant(payloads(), ids=[str(uuid.UUID(int=i)) for i in range(N)]), 0),
    # 5 MB texts: every text detector finishes on them
    Case("jsonl-5mb-text", jsonl(rows(r3={"text": BIG_TEXT})), 0,
         detectors=("integrity", "pii")),
    Case("qdrant-5mb-text", qdrant(payloads(r0={"text": BIG_TEXT, "other": BIG_TEXT})), 0),
    Case("parquet-5mb-text",
         parquet(arrow_table(text=lambda: [BIG_TEXT if i == 2 else t for i, t in enumerate(TEXTS)])), 0),
    # A6: duplicate ids; A8: a text field missing everywhere is one collection-level finding
    Case("jsonl-duplicate-ids", jsonl([*rows(), rows()[3] | {"vector": (VECTORS[9] * 0.5).tolist()}]), 1,
         {"VA111": {3}}, points=N + 1),
    Case("parquet-duplicate-ids", parquet(arrow_table(id=lambda: [i % (N - 2) for i in range(N)])), 1,
         {"VA111": {0, 1}}),
    Case("jsonl-text-field-missing-everywhere", jsonl(rows()), 1, {"VA107": {None}},
         args=("--text-field", "body")),
    # broken files: the scan stops with the place and the fix
    Case("jsonl-truncated", raw_file("dump.jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in rows())[:-40]),
         3, error=("dump.jsonl", "is not JSON", "re-export"), points=None),
    Case("jsonl-not-an-object", jsonl([*rows()[:3], b"[1, 2, 3]", *rows()[4:]]), 3,
         error=("dump.jsonl", "not a JSON object"), points=None),
    Case("jsonl-deep-nesting", jsonl([*rows()[:2], b'{"id": 2, "vector": [1], "p": ' + b"[" * 100_000
                                      + b"]" * 100_000 + b"}", *rows()[3:]]),
         3, error=("dump.jsonl", "nests deeper", "flatten"), points=None),
    Case("jsonl-deep-payload-with-a-surrogate", jsonl([*rows()[:2], b'{"id": 2, "vector": [1, 0, 0, 0, 0, 0, 0, 0], '
                                                      b'"text": "t", "p": ' + b'{"a": [' * 450 + b'"\\ud800"'
                                                      + b"]}" * 450 + b"}", *rows()[3:]]),
         1, {"VA110": {2}}),
    Case("parquet-truncated", parquet(arrow_table(), truncate=True), 3, error=("dump.parquet", "re-export"),
         points=None),
    Case("npz-truncated", npz(npz_arrays(), truncate=True), 3, error=("dump.npz", "re-export"), points=None),
    Case("npz-pickled-objects", npz(npz_arrays(text=lambda: np.array([{"a": 1}] * N, dtype=object))),
         2, error=("array 'text'", "Python objects", "unicode array"), points=None),
    # empty collections
    Case("qdrant-empty", qdrant_empty, 0, points=0),
    Case("jsonl-empty", raw_file("dump.jsonl", b""), 0, points=0),
    Case("jsonl-blank-lines-only", raw_file("dump.jsonl", b"\n\n  \n"), 0, points=0),
    Case("parquet-empty", parquet(lambda: arrow_table()().slice(0, 0)), 0, points=0),
    Case("npz-empty", npz(npz_arrays(vectors=np.zeros((0, DIM), np.float32), ids=np.arange(0),
                                     text=np.array([], dtype=str))), 0, points=0),
]


def store_digest(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` (the store, or the folder holding the export)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def scan(uri: str, ledger: str, case: Case) -> Result:
    collection = ["--collection", "docs"] if uri.startswith("qdrant") else []
    detectors = [a for name in case.detectors for a in ("--detector", name)]
    return CliRunner().invoke(cli, ["scan", uri, *collection, *case.args, *detectors, "--ledger", ledger,
                                    "--fail-on", "medium", "--format", "json"])


def assert_clean_exit(result: Result, case: Case) -> None:
    """No traceback and no unexpected exception; a failure is one ``error:`` line holding each expected part."""
    out = result.stderr + result.stdout
    assert "Traceback" not in out and "internal error" not in out, out[-3000:]
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == case.exit, f"{case.name}: exit {result.exit_code}\n{result.stderr[-3000:]}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    if case.error:
        assert len(errors) == 1, result.stderr
        for part in case.error:
            assert part in errors[0], errors[0]
    else:
        assert not errors, result.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_store(case: Case, tmp_path: Path) -> None:
    store = tmp_path / "store"
    uri = case.build(store)
    before = store_digest(store)
    result = scan(uri, f"sqlite:///{tmp_path / 'ledger.db'}", case)
    assert_clean_exit(result, case)
    if not case.error:
        doc = json.loads(result.stdout)
        assert doc["scan"]["status"] == "completed", doc["scan"]
        if case.points is not None:
            assert doc["scan"]["points_scanned"] == case.points
        found: dict[str, set[Any]] = {}
        for f in doc["findings"]:
            found.setdefault(f["rule_id"], set()).add(f["point_id"])
        for rule, points in case.rules.items():
            assert found.get(rule) == points, (rule, found)
        assert not {"VA103", "VA502"} & set(found) - set(case.rules), found  # no false dimension faults
    assert store_digest(store) == before, "the scan wrote to the store"


def test_every_default_detector_on_a_hostile_qdrant_store(tmp_path: Path, embed: Any) -> None:
    """All default detectors (real model, real text) over lone surrogates in the text, a nested field and a key,
    NUL and terminal escapes in tenant labels: the scan completes, flags those points, and no detector fails."""
    texts = [json.loads(line)["text"] for line in (Path(__file__).parents[1] / "data" / "pubmed.jsonl").open()][:40]
    hostile = [{"text": t, "tenant": "acme" if i % 2 else "globex"} for i, t in enumerate(texts)]
    hostile[1]["text"] = texts[1][:200] + "\ud800" + texts[1][200:]
    hostile[2]["source"] = {"tags": ["pubmed", "\udc80"]}
    hostile[3]["k\udfff"] = "v"
    hostile[4]["tenant"] = "acme\x00" + ANSI
    hostile[5]["text"] = ANSI + texts[5]
    store = tmp_path / "store"
    uri = build_qdrant_store(store, embed(texts), hostile)
    before = store_digest(store)
    result = CliRunner().invoke(cli, ["scan", uri, "--collection", "docs", "--text-field", "text", "--tenant-field",
                                      "tenant", "--ledger", f"sqlite:///{tmp_path / 'ledger.db'}", "--format", "json",
                                      "--fail-on", "medium"])
    assert_clean_exit(result, Case("all-defaults", qdrant_empty, 1))
    doc = json.loads(result.stdout)
    assert doc["scan"]["status"] == "completed" and doc["scan"]["points_scanned"] == 40
    assert not [n for n in doc["scan"]["notes"] if "failed" in n], doc["scan"]["notes"]
    assert {f["point_id"] for f in doc["findings"] if f["rule_id"] == "VA110"} == {1, 2, 3, 4}
    assert store_digest(store) == before


@pytest.mark.postgres
def test_ids_and_labels_too_long_for_a_column_never_blind_a_postgres_ledger(fresh_postgres_db: str,
                                                                              tmp_path: Path) -> None:
    """PostgreSQL refuses a value longer than its varchar column (SQLite does not check): one long id or tenant
    label used to fail the whole scan there, with an SQL dump as the message."""
    hostile = long_rows()
    hostile[6].update(tenant="acme\x00", text="NUL\x00in text")  # PostgreSQL text refuses NUL too
    uri = jsonl(hostile)(tmp_path / "store")
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade", "--ledger", fresh_postgres_db]).exit_code == 0
    case = Case("postgres-long-values", jsonl([]), 1, detectors=("integrity", "provenance", "tenant-label"))
    result = scan(uri, fresh_postgres_db, case)
    assert_clean_exit(result, case)
    doc = json.loads(result.stdout)
    assert doc["scan"]["status"] == "completed" and doc["scan"]["points_scanned"] == N
    assert {f["point_id"] for f in doc["findings"] if f["rule_id"] == "VA112"} == {
        safe_id("y" * 1_000_000)[0], safe_id(2**70)[0], safe_id("é" * 200)[0]}
    assert {f["point_id"] for f in doc["findings"] if f["rule_id"] == "VA110"} == {6}
