"""Core value types shared by connectors, detectors and the engine: severities, field maps, point batches."""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from auditor.textsafety import NO_REPAIRS, PointRepairs, bounded_label

PointId: TypeAlias = int | str
FloatMatrix: TypeAlias = npt.NDArray[np.float32]


class Severity(enum.Enum):
    """Finding severity; ordered by ``rank`` (explicit numbers, never list position)."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    @classmethod
    def parse(cls, value: str | Severity) -> Severity:
        if isinstance(value, Severity):
            return value
        try:
            return cls(value.strip().lower())
        except ValueError:
            choices = ", ".join(s.value for s in cls)
            from auditor.errors import ConfigError

            raise ConfigError(f"unknown severity {value!r}", hint=f"use one of: {choices}") from None

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank


_SEVERITY_RANK = {
    Severity.INFO: 0,
    Severity.LOW: 10,
    Severity.MEDIUM: 20,
    Severity.HIGH: 30,
    Severity.CRITICAL: 40,
}


class Confidence(enum.Enum):
    """How sure the rule is that a flagged point is really a fault (the second axis, as in bandit)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Distance(enum.Enum):
    """Similarity measure a collection is searched with."""

    COSINE = "cosine"
    DOT = "dot"
    EUCLID = "euclid"
    MANHATTAN = "manhattan"


class _Missing:
    """Sentinel for a payload field that is absent (distinct from an explicit null)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@dataclass(frozen=True)
class FieldMap:
    """Which payload fields hold the text, tenant, document id and ingestion time (dotted paths allowed)."""

    text: str | None = None
    tenant: str | None = None
    doc_id: str | None = None
    timestamp: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"text": self.text, "tenant": self.tenant, "doc_id": self.doc_id, "timestamp": self.timestamp}


def resolve_field(payload: Any, path: str | None) -> Any:
    """Value at a dotted ``path`` in ``payload``; ``MISSING`` when any step is absent."""
    if path is None:
        return MISSING
    if isinstance(payload, Mapping) and path in payload:
        return payload[path]
    node: Any = payload
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


@dataclass(frozen=True)
class CollectionInfo:
    """What ``Connector.describe()`` returns about the collection being audited."""

    name: str
    dim: int
    distance: Distance
    count: int
    vector_name: str | None = None
    vector_names: tuple[str, ...] = ()
    payload_schema: Mapping[str, str] = field(default_factory=dict)
    payload_indexes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dim": self.dim,
            "distance": self.distance.value,
            "count": self.count,
            "vector_name": self.vector_name,
            "vector_names": list(self.vector_names),
            "payload_schema": dict(self.payload_schema),
            "payload_indexes": {k: dict(v) for k, v in self.payload_indexes.items()},
            "extra": dict(self.extra),
        }


@dataclass
class PointBatch:
    """One page as a connector reads it: ids, the audited vector of each point (or None), payloads.

    ``vectors`` items are whatever the store returned (list of floats or 1-D array), possibly of the
    wrong length; the engine turns the page into a :class:`RecordBatch`.
    """

    ids: list[PointId]
    vectors: list[Sequence[float] | np.ndarray | None]
    payloads: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class StoredPoint:
    """A complete point as stored: every named vector (``""`` for the unnamed one) and the payload."""

    id: PointId
    vectors: dict[str, list[float]]
    payload: dict[str, Any]


@dataclass
class RecordBatch:
    """A page resolved through the field map, as detectors see it in pass 1.

    ``vectors`` is float32 ``(n, dim)``; rows whose stored vector had the wrong length (``stored_dims``
    differs from ``dim``) or no vector at all are zero-filled and must be judged by ``dim_ok`` first.
    ``text_values``/``tenant_values`` hold the raw payload value or ``MISSING``. Ids, payload keys and strings
    are already safe (:mod:`auditor.textsafety`); ``repairs`` says, per point, what that changed.
    """

    offset: int
    ids: list[PointId]
    vectors: FloatMatrix
    stored_dims: npt.NDArray[np.int64]
    payloads: list[dict[str, Any]]
    text_values: list[Any]
    tenant_values: list[Any]
    doc_ids: list[Any]
    timestamps: list[Any]
    vector_hashes: list[str]
    payload_hashes: list[str]
    text_hashes: list[str | None]
    repairs: list[PointRepairs] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def repairs_of(self, row: int) -> PointRepairs:
        """What the connector boundary changed on point ``row`` (nothing for a batch built without it)."""
        return self.repairs[row] if row < len(self.repairs) else NO_REPAIRS

    @property
    def dim_ok(self) -> npt.NDArray[np.bool_]:
        return self.stored_dims == self.vectors.shape[1]

    # cached: detectors index these per point (``batch.tenants[i]``), which must not rebuild the list each time
    @functools.cached_property
    def texts(self) -> list[str | None]:
        """Text per point when it is a string, else None."""
        return [t if isinstance(t, str) else None for t in self.text_values]

    @functools.cached_property
    def tenants(self) -> list[str | None]:
        """Tenant label as a string when present and a string/number, else None."""
        return [tenant_label(t) for t in self.tenant_values]


def tenant_label(value: Any) -> str | None:
    """Normalise a raw tenant value to a label; None when missing, null, empty or a container. A label longer
    than 200 characters is kept as a bounded form (prefix and hash: still distinct, fits the ledger)."""
    if value is MISSING or value is None or isinstance(value, (dict, list, bool)):
        return None
    label = str(value)
    return bounded_label(label) if label.strip() else None
