"""Quarantine building blocks: bit-exact backups, lock staleness, the retrieval guard, cosine pre-images."""

from __future__ import annotations

import math
import os
import socket
from typing import Any

import numpy as np
import pytest
from conftest import load_jsonl

from auditor.guard import exclude_quarantined
from auditor.quarantine import decode_point, encode_point, lock_is_stale, new_lock_token, reopenable, vectors_equal
from auditor.types import StoredPoint
from connectors.qdrant import cosine_preimage


def test_backup_round_trip_is_bit_exact_for_awkward_floats() -> None:
    awkward = np.array([np.nan, -0.0, np.inf, -np.inf, 1e-45, 3.4028235e38, 0.1], dtype=np.float32)
    nan_payload = np.frombuffer(np.uint32(0x7FC12345).tobytes(), dtype=np.float32)  # a NaN with payload bits
    vector = np.concatenate([awkward, nan_payload])
    point = StoredPoint(id="a1b2", vectors={"dense": vector.tolist(), "": [1.5, 2.5]}, payload={"text": "é", "n": 1})
    doc = encode_point(point)
    import json

    back = decode_point(json.loads(json.dumps(doc)))  # through JSON, as the ledger stores it
    assert np.asarray(back.vectors["dense"], dtype="<f4").tobytes() == vector.astype("<f4").tobytes()
    assert back.payload == point.payload and back.id == "a1b2"
    assert vectors_equal(back, point)
    changed = StoredPoint(id="a1b2", vectors={"dense": vector.tolist(), "": [1.5, 2.5000002]}, payload={})
    assert not vectors_equal(changed, point)


def test_lock_staleness() -> None:
    assert lock_is_stale(None)
    assert not lock_is_stale(new_lock_token())  # this process holds it
    host = socket.gethostname()[:30]
    assert not lock_is_stale(f"abc:{os.getppid()}:0:{host}")  # a live process on this host, however old
    assert lock_is_stale(f"abc:999999999:9999999999:{host}")  # no such process
    assert lock_is_stale("abc:1:0:another-host")  # lease expired
    assert not lock_is_stale(f"abc:1:{2**40}:another-host")
    assert lock_is_stale("garbage")


def test_reopenable_restores_the_local_uri() -> None:
    assert reopenable("qdrant+local:/data/store") == "qdrant+local:///data/store"
    assert reopenable("qdrant+local:///data/store") == "qdrant+local:///data/store"
    assert reopenable("qdrant://db:6333") == "qdrant://db:6333"


def test_guard_keeps_the_callers_filter() -> None:
    from qdrant_client import models

    mine = models.Filter(
        must=models.FieldCondition(key="tenant", match=models.MatchValue(value="acme")),
        must_not=[models.FieldCondition(key="draft", match=models.MatchValue(value=True))],
    )
    guarded = exclude_quarantined(mine, flag_field="q")
    assert isinstance(guarded.must, list) and len(guarded.must) == 2
    assert guarded.must_not == mine.must_not
    assert guarded.must[1].is_empty.key == "q"
    assert exclude_quarantined({"should": [{"key": "a", "match": {"value": 1}}]}).should
    with pytest.raises(TypeError):
        exclude_quarantined("tenant = acme")


def test_cosine_preimage_restores_real_normalised_vectors(embed: Any) -> None:
    """Qdrant local normalises on every write; restoring a stored (already normalised) MiniLM vector as is
    changes the last bit of some; the pre-image makes every one of them come back exactly."""
    texts = [r["text"] for r in load_jsonl("hotpotqa_retrieved.jsonl")[:36]]
    vectors = embed(texts)

    def normalise(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float32)
        return v / np.linalg.norm(v)

    stored = [normalise(v) for v in vectors]
    naive_misses = sum(not np.array_equal(normalise(s), s) for s in stored)
    exact = sum(np.array_equal(normalise(cosine_preimage(s)), s) for s in stored)
    assert exact == len(stored)
    assert naive_misses >= 1  # the problem is real on this data, so the check above can fail
    assert math.isfinite(float(np.sum(cosine_preimage(stored[0]))))
