"""Compact per-tenant pictures of a collection's vectors (count, centroid, a seeded bottom-k sample), kept in
the ledger with every completed scan so the next scan can measure drift without the old vectors."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from auditor.context import ScanContext
from auditor.findings import point_key
from auditor.ledger.models import TenantSummaryRow
from auditor.types import Distance, PointId

#: Vectors kept per tenant: 256 x 384 float16 = 192 KiB, enough for an MMD test that sees a 10% shift.
SAMPLE_SIZE = 256
_ROWS_PER_READ = 65_536


@dataclass
class TenantSummary:
    """``centroid`` float32 ``(dim,)``; ``sample`` float32 ``(m, dim)`` (stored as float16) of the ``m`` points
    with the smallest seeded hash of their id, so an unchanged point stays in the sample scan after scan."""

    tenant: str | None
    count: int
    centroid: npt.NDArray[np.float32]
    sample: npt.NDArray[np.float32]


def _rank(pid: PointId, seed: int) -> int:
    digest = hashlib.blake2b(point_key(pid).encode(), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "big")


def prepare(vectors: npt.NDArray[np.float32], distance: Distance) -> npt.NDArray[np.float32]:
    """Vectors as drift compares them: unit length for cosine collections (direction is what is searched)."""
    out = np.asarray(vectors, dtype=np.float32)
    if distance is Distance.COSINE:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = (out / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    return out


def summarise(ctx: ScanContext, *, sample_size: int = SAMPLE_SIZE, seed: int = 0) -> dict[str | None, TenantSummary]:
    """Per-tenant summaries of the valid vectors in ``ctx.table`` (sealed); tenant None = unlabelled points."""
    table = ctx.table
    valid = ctx.valid_mask()
    rows_by_tenant: dict[str | None, list[int]] = {}
    for i, tenant in enumerate(table.tenants):
        if valid[i]:
            rows_by_tenant.setdefault(tenant, []).append(i)
    out: dict[str | None, TenantSummary] = {}
    vectors = table.vectors
    for tenant, rows in rows_by_tenant.items():
        total = np.zeros(table.dim, dtype=np.float64)
        for start in range(0, len(rows), _ROWS_PER_READ):
            block = prepare(vectors[rows[start : start + _ROWS_PER_READ]], ctx.info.distance)
            total += block.sum(axis=0, dtype=np.float64)
        ranks = np.array([_rank(table.ids[r], seed) for r in rows], dtype=np.uint64)
        chosen = np.asarray(rows)[np.argsort(ranks, kind="stable")[:sample_size]]
        sample = prepare(vectors[np.sort(chosen)], ctx.info.distance)
        out[tenant] = TenantSummary(tenant, len(rows), (total / len(rows)).astype(np.float32), sample)
    return out


def store(session: Session, *, collection_id: int, scan_id: int, summaries: dict[str | None, TenantSummary]) -> None:
    for s in summaries.values():
        session.add(
            TenantSummaryRow(
                collection_id=collection_id,
                scan_id=scan_id,
                tenant=s.tenant,
                count=s.count,
                dim=int(s.centroid.shape[0]),
                centroid=s.centroid.astype("<f4").tobytes(),
                sample=s.sample.astype("<f2").tobytes(),
                sample_size=int(s.sample.shape[0]),
            )
        )


def load(session: Session, scan_id: int) -> dict[str | None, TenantSummary]:
    """The summaries recorded with ``scan_id`` (empty for scans made before summaries existed)."""
    out: dict[str | None, TenantSummary] = {}
    for row in session.scalars(select(TenantSummaryRow).where(TenantSummaryRow.scan_id == scan_id)):
        centroid = np.frombuffer(row.centroid, dtype="<f4").astype(np.float32)
        sample = np.frombuffer(row.sample, dtype="<f2").astype(np.float32).reshape(row.sample_size, row.dim)
        out[row.tenant] = TenantSummary(row.tenant, row.count, centroid, sample)
    return out
