"""Turn a connector's raw page into a RecordBatch: ids and every payload string made safe (the connector boundary,
:mod:`auditor.textsafety`), vectors to float32 of the collection's dimension, payload fields resolved through the
field map, content hashes computed."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from auditor.hashing import json_hash, text_hash, vector_hash
from auditor.textsafety import safe_points
from auditor.types import MISSING, FieldMap, PointBatch, PointId, RecordBatch, resolve_field


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


def _stacked(raw_vectors: Sequence[Any], dim: int) -> npt.NDArray[np.float32] | None:
    """float32 ``(n, dim)`` of a page whose vectors are all plain 1-D numeric arrays of one dtype and of length
    ``dim`` (what the Arrow-based connectors return: rows of one column), else None. One conversion for the page
    gives the values the per-row :func:`_as_vector` gives (the same cast from the same dtype), ~100x quicker."""
    if not raw_vectors:
        return None
    first = raw_vectors[0]
    if type(first) is not np.ndarray or first.dtype.kind not in "fiu":
        return None
    dtype = first.dtype
    for raw in raw_vectors:
        if type(raw) is not np.ndarray or raw.ndim != 1 or raw.shape[0] != dim or raw.dtype != dtype:
            return None
    with np.errstate(over="ignore"):  # as in _as_vector: beyond float32 becomes inf, flagged by integrity (VA101)
        return np.stack(raw_vectors).astype(np.float32, copy=False)


def _row_hashes(vectors: npt.NDArray[np.float32]) -> list[str]:
    """:func:`auditor.hashing.vector_hash` of every row of a float32 ``(n, d)`` matrix: the rows' little-endian
    bytes are made once for the page and each row hashed in place (no array or bytes object per row)."""
    data = memoryview(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
    step = vectors.shape[1] * 4
    return [hashlib.sha256(data[start : start + step]).hexdigest()[:32] for start in range(0, len(data), step)]


def resolve_batch(batch: PointBatch, field_map: FieldMap, dim: int, offset: int = 0) -> RecordBatch:
    """Resolve one page. Rows with a missing/unparseable vector get ``stored_dims`` 0; rows of another
    length keep their length in ``stored_dims`` and a zero row in ``vectors``. Every id, payload key and string
    is made safe first (lone surrogates and NUL escaped), so nothing after this point can fail to encode."""
    n = len(batch)
    stacked = _stacked(batch.vectors, dim) if dim else None
    vhashes: list[str]
    if stacked is not None:
        vectors = stacked
        stored_dims = np.full(n, dim, dtype=np.int64)
        vhashes = _row_hashes(vectors)
    else:
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
    texts = _field(payloads, field_map.text)
    return RecordBatch(
        offset=offset,
        ids=safe.ids,
        vectors=vectors,
        stored_dims=stored_dims,
        payloads=payloads,
        text_values=texts,
        tenant_values=_field(payloads, field_map.tenant),
        doc_ids=_field(payloads, field_map.doc_id),
        timestamps=_field(payloads, field_map.timestamp),
        vector_hashes=vhashes,
        payload_hashes=[json_hash(c) for c in safe.canonical],
        text_hashes=[text_hash(t) for t in texts] if field_map.text is not None else [None] * n,
        repairs=safe.repairs,
    )


def _field(payloads: list[dict[str, Any]], path: str | None) -> list[Any]:
    """The field map's ``path`` resolved in every payload (all ``MISSING`` when the field is not mapped)."""
    if path is None:
        return [MISSING] * len(payloads)
    return [resolve_field(p, path) for p in payloads]


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
