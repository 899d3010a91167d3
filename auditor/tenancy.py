"""The tenancy report behind ``vecaudit tenants``: per-tenant point counts and unlabeled points from the ledger's
latest point versions, and a from→to matrix of cross-tenant copies, misfiled documents and foreign markers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from tabulate import tabulate

from auditor.errors import ConfigError
from auditor.ledger import repository as repo
from auditor.ledger.models import CollectionRow, FindingOccurrenceRow, FindingRow

#: rule id -> matrix kind; the finding's tenant (where the point is filed) is "to"
MATRIX_RULES: dict[str, str] = {
    "VA411": "copies", "VA412": "copies", "VA421": "misfiled",
    "VA431": "markers", "VA432": "markers", "VA433": "markers",
}
#: evidence key of the "from" tenant: the earlier tenant of a copy, the owner of a marker, and for a misfiled
#: document the tenant it reads like (``likely_tenant``; ledgers written before the rename hold ``from_tenant``)
SOURCE_KEYS: dict[str, tuple[str, ...]] = {"VA421": ("likely_tenant", "from_tenant")}
DEFAULT_SOURCE_KEYS = ("from_tenant",)
UNLABELED = "(unlabeled)"


@dataclass
class TenancyReport:
    """Counts per tenant (``None`` key = unlabeled) and ``matrix[kind][from][to]`` finding counts."""

    collection: str
    collection_key: str
    scan_id: int | None
    counts: dict[str | None, int]
    matrix: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def unlabeled(self) -> int:
        return self.counts.get(None, 0)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready document (``version`` 1)."""
        return {
            "version": 1,
            "collection": self.collection,
            "collection_key": self.collection_key,
            "scan_id": self.scan_id,
            "points": self.total,
            "unlabeled": self.unlabeled,
            "tenants": {t: n for t, n in _sorted_counts(self.counts) if t is not None},
            "matrix": self.matrix,
        }

    def tables(self) -> str:
        """Plain-text tables: tenant counts, then one from→to matrix per kind that has entries."""
        total = self.total or 1
        rows = [[UNLABELED if t is None else t, n, f"{100.0 * n / total:.1f}%"] for t, n in _sorted_counts(self.counts)]
        parts = [
            f"collection {self.collection} (scan {self.scan_id}): {self.total} points, {self.unlabeled} unlabeled",
            tabulate(rows, headers=["tenant", "points", "share"], tablefmt="simple", disable_numparse=True),
        ]
        for kind, cells in self.matrix.items():
            sources = sorted(cells)
            targets = sorted({t for row in cells.values() for t in row})
            grid = [[s, *[cells[s].get(t, 0) or "" for t in targets]] for s in sources]
            parts.append(f"\n{kind} (rows: from tenant, columns: to tenant)")
            parts.append(tabulate(grid, headers=["from \\ to", *targets], tablefmt="simple", disable_numparse=True))
        if not self.matrix:
            parts.append("\nno cross-tenant copies, misfiled documents or foreign markers in the latest scan")
        return "\n".join(parts)


def _sorted_counts(counts: dict[str | None, int]) -> list[tuple[str | None, int]]:
    return sorted(counts.items(), key=lambda kv: (kv[0] is None, -kv[1], str(kv[0])))


def find_collection(session: Session, collection: str | None) -> CollectionRow:
    """The ledger's collection by name or key; the only one when ``collection`` is None."""
    stmt = select(CollectionRow).order_by(CollectionRow.id)
    if collection:
        stmt = stmt.where((CollectionRow.name == collection) | (CollectionRow.key == collection))
    rows = list(session.scalars(stmt))
    if len(rows) == 1:
        return rows[0]
    keys = ", ".join(r.key for r in rows)
    if not rows:
        known = ", ".join(r.key for r in session.scalars(select(CollectionRow))) or "none yet; run `vecaudit scan`"
        raise ConfigError(f"no collection {collection!r} in the ledger" if collection else "the ledger has no scans",
                          hint=f"known collections: {known}")
    raise ConfigError("several collections match", hint=f"pass --collection with one of: {keys}")


def build_report(session: Session, collection: str | None = None) -> TenancyReport:
    """Tenancy report of a collection from the ledger (its latest completed scan)."""
    coll = find_collection(session, collection)
    states = repo.latest_point_states(session, coll.id)
    counts: dict[str | None, int] = dict(Counter(state.tenant for state in states.values()))
    scan = repo.last_completed_scan(session, coll.id)
    report = TenancyReport(coll.name, coll.key, scan.id if scan is not None else None, counts)
    if scan is None:
        return report
    rows = session.execute(
        select(FindingRow.rule_id, FindingRow.tenant, FindingOccurrenceRow.evidence)
        .join(FindingOccurrenceRow, FindingOccurrenceRow.finding_id == FindingRow.id)
        .where(
            FindingRow.collection_id == coll.id,
            FindingOccurrenceRow.scan_id == scan.id,
            FindingRow.rule_id.in_(list(MATRIX_RULES)),
            FindingRow.status.not_in(list(repo.SILENCED_STATUSES)),
        )
    )
    report.matrix = finding_matrix((rule_id, tenant, evidence) for rule_id, tenant, evidence in rows)
    return report


def finding_matrix(items: Any) -> dict[str, dict[str, dict[str, int]]]:
    """``matrix[kind][from][to]`` from ``(rule_id, tenant, evidence)`` triples (unknown rules ignored)."""
    matrix: dict[str, dict[str, dict[str, int]]] = {}
    for rule_id, tenant, evidence in items:
        kind = MATRIX_RULES.get(rule_id)
        if kind is None:
            continue
        ev = evidence or {}
        source = next((ev[key] for key in SOURCE_KEYS.get(rule_id, DEFAULT_SOURCE_KEYS) if key in ev), None)
        src = UNLABELED if source is None else str(source)
        dst = UNLABELED if tenant is None else str(tenant)
        cell = matrix.setdefault(kind, {}).setdefault(src, {})
        cell[dst] = cell.get(dst, 0) + 1
    return matrix
