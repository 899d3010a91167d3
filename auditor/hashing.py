"""Content hashes for provenance: stable across stores and runs, cheap on a million points."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # types imports textsafety, which hashes payloads with this module
    from auditor.types import PointId


def vector_hash(vector: np.ndarray | None) -> str:
    """SHA-256 (truncated) of the float32 little-endian bytes of a vector; ``"none"`` for a missing one."""
    if vector is None:
        return "none"
    data = np.ascontiguousarray(vector, dtype="<f4").tobytes()
    return hashlib.sha256(data).hexdigest()[:32]


#: The encoder ``json.dumps`` would build for these settings on every call, built once (a scan encodes one payload
#: per point: 0.15-0.3 s of a 100k-point scan went to building encoders). It holds settings only: thread-safe.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def canonical_json(payload: Any) -> str:
    """The canonical JSON text of a payload that :func:`payload_hash` hashes: sorted keys, no whitespace,
    non-ASCII kept, anything JSON cannot hold written as its ``str()``. Never raises on a payload a store can
    hold: keys that cannot be sorted together (``1`` and ``"a"``) are written as strings first."""
    try:
        return _CANONICAL.encode(payload)
    except TypeError:
        return _CANONICAL.encode(_string_keys(payload))


def _string_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _string_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_string_keys(v) for v in value]
    return value


def payload_hash(payload: Any) -> str:
    """SHA-256 (truncated) of the canonical JSON of a payload (:func:`canonical_json`)."""
    return json_hash(canonical_json(payload))


def json_hash(canonical: str | bytes) -> str:
    """SHA-256 (truncated) of a payload's canonical JSON (text, or its UTF-8 bytes).

    Payloads are made safe at the connector boundary (:mod:`auditor.textsafety`); ``surrogatepass`` only keeps
    a caller that skipped it from crashing here."""
    data = canonical if isinstance(canonical, bytes) else canonical.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:32]


def text_hash(text: Any) -> str | None:
    """SHA-256 (truncated) of a text value; None when the point has no string text."""
    if not isinstance(text, str):
        return None
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def point_version(vector_h: str, text_h: str | None) -> str:
    """The content version a finding's identity is tied to: vector and text together."""
    return f"{vector_h}:{text_h or '-'}"


#: Prefix of a state that folds the copies of an id stored more than once (see :func:`point_states`).
DUPLICATE_STATE = "dup:"


def duplicate_id_rows(ids: Sequence[PointId]) -> dict[str, list[int]]:
    """Rows of every id that occurs more than once, keyed by ``point_key``; empty when all ids are distinct.

    A 64-bit hash per id picks the candidates (8 bytes a point, not a dict of a million keys); candidates are
    then grouped by their exact key."""
    from auditor.findings import point_key  # findings sits above hashing

    n = len(ids)
    if n < 2:
        return {}
    hashes = np.fromiter((hash((isinstance(p, str), p)) for p in ids), dtype=np.int64, count=n)
    order = np.argsort(hashes, kind="stable")
    same = hashes[order][1:] == hashes[order][:-1]
    candidate = np.zeros(n, dtype=bool)
    candidate[1:] |= same
    candidate[:-1] |= same
    groups: dict[str, list[int]] = defaultdict(list)
    for row in np.sort(order[candidate]).tolist():
        groups[point_key(ids[row])].append(row)
    return {key: rows for key, rows in groups.items() if len(rows) > 1}


def _fold(values: Sequence[str | None]) -> str:
    return DUPLICATE_STATE + hashlib.sha256("\n".join(v or "-" for v in values).encode()).hexdigest()[:32]


def point_states(
    ids: Sequence[PointId],
    vector_hashes: Sequence[str],
    payload_hashes: Sequence[str],
    text_hashes: Sequence[str | None],
    tenants: Sequence[str | None],
) -> Iterator[tuple[str, str, str, str | None, str | None]]:
    """One ``(point_key, vector hash, payload hash, text hash, tenant)`` per point id, in first-seen order.

    An id stored more than once (an export with duplicate ids) gets one state that folds all its copies in
    order, each hash prefixed :data:`DUPLICATE_STATE`: an unchanged file then reads as unchanged, and no copy is
    ever compared with another copy's state (provenance skips folded states; integrity VA111 reports the id)."""
    from auditor.findings import point_key

    duplicates = duplicate_id_rows(ids)
    for i, pid in enumerate(ids):
        key = point_key(pid)
        rows = duplicates.get(key)
        if rows is None:
            yield key, vector_hashes[i], payload_hashes[i], text_hashes[i], tenants[i]
        elif rows[0] == i:
            texts = [text_hashes[r] for r in rows]
            yield (
                key,
                _fold([vector_hashes[r] for r in rows]),
                _fold([payload_hashes[r] for r in rows]),
                None if all(t is None for t in texts) else _fold(texts),
                next((tenants[r] for r in rows if tenants[r] is not None), None),
            )
