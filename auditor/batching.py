"""Turn a connector's raw page into a RecordBatch: ids and every payload string made safe (the connector boundary,
:mod:`auditor.textsafety`), vectors to float32 of the collection's dimension, payload fields resolved through the
field map, content hashes computed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from auditor.hashing import json_hash, text_hash, vector_hash
from auditor.textsafety import safe_points
from auditor.types import FieldMap, PointBatch, PointId, RecordBatch, resolve_field


def _as_vector(raw: Any) -> np.ndarray | None:
    """A 1-D float array, or None for a missing or unreadable vector (a string, nested lists, non-numbers)."""
    if raw is None or isinstance(raw, str | bytes | dict):
        return None
    try:
        with np.errstate(over="ignore"):  # a component beyond float32 becomes inf, flagged by integrity (VA101)
            arr = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        return None
    return arr.reshape(-1) if arr.ndim <= 1 else None


def resolve_batch(batch: PointBatch, field_map: FieldMap, dim: int, offset: int = 0) -> RecordBatch:
    """Resolve one page. Rows with a missing/unparseable vector get ``stored_dims`` 0; rows of another
    length keep their length in ``stored_dims`` and a zero row in ``vectors``. Every id, payload key and string
    is made safe first (lone surrogates and NUL escaped), so nothing after this point can fail to encode."""
    n = len(batch)
    vectors = np.zeros((n, dim), dtype=np.float32)
    stored_dims = np.zeros(n, dtype=np.int64)
    vhashes = []
    for i, raw in enumerate(batch.vectors):
        vec = _as_vector(raw)
        if vec is None:
            vhashes.append(vector_hash(None))
            continue
        stored_dims[i] = vec.shape[0]
        if vec.shape[0] == dim:
            vectors[i] = vec
        vhashes.append(vector_hash(vec))
    safe = safe_points(batch.ids, batch.payloads)
    payloads = safe.payloads
    texts = [resolve_field(p, field_map.text) for p in payloads]
    return RecordBatch(
        offset=offset,
        ids=safe.ids,
        vectors=vectors,
        stored_dims=stored_dims,
        payloads=payloads,
        text_values=texts,
        tenant_values=[resolve_field(p, field_map.tenant) for p in payloads],
        doc_ids=[resolve_field(p, field_map.doc_id) for p in payloads],
        timestamps=[resolve_field(p, field_map.timestamp) for p in payloads],
        vector_hashes=vhashes,
        payload_hashes=[json_hash(c) for c in safe.canonical],
        text_hashes=[text_hash(t) for t in texts],
        repairs=safe.repairs,
    )


def make_batch(
    ids: Sequence[PointId],
    vectors: Any,
    payloads: Sequence[dict[str, Any]],
    field_map: FieldMap,
    dim: int | None = None,
) -> RecordBatch:
    """Convenience for tests and in-memory use: a RecordBatch straight from arrays and payloads."""
    vec_list = list(vectors)
    d = dim if dim is not None else (len(vec_list[0]) if vec_list else 0)
    return resolve_batch(PointBatch(list(ids), vec_list, list(payloads)), field_map, d)
