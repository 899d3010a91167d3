"""The incremental state kept on disk: committed atomically per scan, private, and ignored when foreign,
unfinished or damaged (a cache: losing it costs time, never findings)."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np

from auditor.graph import exact_graph
from auditor.statecache import StateCache
from auditor.types import Distance


def _state(tmp_path: Path, key: str = "qdrant+local:///store#docs") -> StateCache:
    return StateCache(tmp_path / "state", key)


def test_commit_then_read_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    members = np.arange(40) % 3 != 0
    graph = exact_graph(x, 4, Distance.EUCLID, members)
    digests = [bytes([i]) * 19 + b"\x00" for i in range(5)]  # trailing zero bytes must survive
    cache = _state(tmp_path)
    cache.begin(7)
    cache.stage_graph("sub:tenant:a", graph, members)
    cache.stage_encodings("model-x", {d: np.full(8, i, dtype=np.float32) for i, d in enumerate(digests)})
    cache.commit([f'"p{i}"' for i in range(40)], [f"h{i}" for i in range(40)])

    again = _state(tmp_path)
    by_key, hashes = again.rows() or ({}, [])
    assert by_key['"p3"'] == 3 and hashes[3] == "h3"
    stored = again.graph("sub:tenant:a")
    assert stored is not None and stored.distance is Distance.EUCLID and stored.exact
    assert np.array_equal(stored.rows, np.flatnonzero(members))
    assert np.array_equal(stored.indices, graph.indices[members])
    assert again.graph("all") is None
    enc = again.encodings("model-x")
    assert set(enc) == set(digests) and float(enc[digests[4]][0]) == 4.0
    assert again.encodings("model-y") == {}
    assert stat.S_IMODE(again.path.stat().st_mode) == 0o700


def test_abandoned_scan_keeps_the_earlier_state(tmp_path: Path) -> None:
    x = np.eye(6, dtype=np.float32)
    cache = _state(tmp_path)
    cache.begin(1)
    cache.stage_graph("all", exact_graph(x, 2, Distance.COSINE), np.ones(6, dtype=bool))
    cache.commit([str(i) for i in range(6)], ["h"] * 6)
    cache.begin(2)
    cache.stage_graph("all", exact_graph(x[:3], 2, Distance.COSINE), np.ones(3, dtype=bool))
    cache.abandon()
    files = sorted(p.name for p in cache.path.iterdir())
    assert not any("-2-" in name for name in files)
    stored = _state(tmp_path).graph("all")
    assert stored is not None and stored.size == 6


def test_foreign_or_damaged_state_is_ignored(tmp_path: Path) -> None:
    cache = _state(tmp_path)
    cache.begin(1)
    cache.stage_graph("all", exact_graph(np.eye(4, dtype=np.float32), 2, Distance.COSINE), np.ones(4, dtype=bool))
    cache.commit(["a", "b", "c", "d"], ["h"] * 4)
    other = StateCache(tmp_path / "state", "other-collection")
    assert other.rows() is None and other.graph("all") is None
    for graph_file in cache.path.glob("graph-*.npz"):
        graph_file.write_bytes(b"not a zip file")
    assert _state(tmp_path).graph("all") is None
    (cache.path / "manifest.json").write_text("{broken", encoding="utf-8")
    assert _state(tmp_path).rows() is None
