"""Read partitions: a collection split into independent, resumable pieces that separate processes (Ray tasks) read
with the same connector code. A plan is computed once on the driver from cheap metadata (row groups, id listings,
primary-key ranges); a partition carries only JSON-serialisable positions, never a credential."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from auditor.types import PointBatch

#: Points per partition when the caller does not say (big enough that opening a reader is amortised).
DEFAULT_TARGET_POINTS = 100_000


@dataclass(frozen=True)
class Partition:
    """One read partition. ``spec`` is connector-specific (row range, id range, fragment list) and JSON-serialisable;
    ``label`` names it in messages ("rows 0-99,999 of dump.parquet"); ``points`` is the expected count, if known."""

    index: int
    label: str
    spec: Mapping[str, Any] = field(default_factory=dict)
    points: int | None = None


@dataclass(frozen=True)
class PartitionPlan:
    """How a collection splits. Read in ``partitions`` order, the partitions give exactly the points of
    ``Connector.iter_batches`` in the same order (so both engines build the same point table).

    ``split`` is False when the store cannot split (one partition), with ``reason`` saying why. ``exclusive``: the
    store admits one reader at a time (Qdrant local mode locks its folder): the partitions are read one after the
    other, and the driver releases its own client first. ``remote`` is False when another process cannot open the
    store at all (an in-memory store): pass 1 then runs on the driver."""

    partitions: list[Partition]
    split: bool = True
    reason: str | None = None
    exclusive: bool = False
    remote: bool = True

    def __len__(self) -> int:
        return len(self.partitions)


def whole(reason: str, *, points: int | None = None, exclusive: bool = False, remote: bool = True) -> PartitionPlan:
    """The plan of a store that cannot split: one partition, the whole collection, and why."""
    return PartitionPlan(
        [Partition(0, "the whole collection", {"whole": True}, points)],
        split=False,
        reason=reason,
        exclusive=exclusive,
        remote=remote,
    )


def is_whole(partition: Partition) -> bool:
    return bool(partition.spec.get("whole"))


def row_ranges(total: int, target: int) -> list[tuple[int, int]]:
    """``[start, stop)`` row ranges of ``target`` rows (the last may be shorter) covering ``0..total``."""
    target = max(1, int(target))
    return [(lo, min(lo + target, total)) for lo in range(0, total, target)] or [(0, 0)]


def group_sizes(sizes: Iterable[int], target: int) -> list[tuple[int, int, int]]:
    """Consecutive units (row groups, fragments) of the given sizes merged into ranges of about ``target`` rows:
    ``(first_unit, stop_unit, rows)``. A unit is never cut."""
    out: list[tuple[int, int, int]] = []
    first, rows = 0, 0
    listed = list(sizes)
    for i, n in enumerate(listed):
        rows += n
        if rows >= target:
            out.append((first, i + 1, rows))
            first, rows = i + 1, 0
    if first < len(listed):
        out.append((first, len(listed), rows))
    return out


def keyset_boundaries(
    pages: Callable[[Any, int], list[Any]], target: int, *, window: int = 10_000
) -> list[tuple[Any, Any, int]]:
    """Key ranges of about ``target`` points from an ordered key listing: ``pages(after, n)`` returns up to ``n``
    keys greater than ``after`` (None: from the first) in the store's order. Returns ``(after, upto, count)``
    triples, ``after`` exclusive (None: from the start), ``upto`` inclusive (None: to the end). Only keys travel."""
    bounds: list[tuple[Any, Any, int]] = []
    after: Any = None
    start: Any = None
    count = 0
    while True:
        keys = pages(after, window)
        if not keys:
            break
        for key in keys:
            count += 1
            if count == target:
                bounds.append((start, key, count))
                start, count = key, 0
        after = keys[-1]
        if len(keys) < window:
            break
    if count or not bounds:
        bounds.append((start, None, count))
    else:  # the last range ended exactly on the last key: it reaches to the end
        lo, _, n = bounds[-1]
        bounds[-1] = (lo, None, n)
    return bounds


def key_range_plan(bounds: list[tuple[Any, Any, int]], key: str) -> PartitionPlan:
    """Partitions ``{"after": A, "upto": B}`` (``A < key <= B``, None: open) from :func:`keyset_boundaries`."""
    parts = [
        Partition(i, f"{key} in ({'start' if lo is None else repr(lo)}, {'end' if hi is None else repr(hi)}]",
                  {"after": lo, "upto": hi}, n)
        for i, (lo, hi, n) in enumerate(bounds)
    ]
    return PartitionPlan(parts)


def key_range_pages(
    partition: Partition,
    start: Any,
    whole_pages: Callable[[], Iterator[tuple[PointBatch, Any]]],
    range_pages: Callable[[Any, Any], Iterator[tuple[PointBatch, Any]]],
) -> Iterator[tuple[PointBatch, Any]]:
    """``iter_partition`` of a keyset-paged store: ``range_pages(after, upto)`` reads ``after < key <= upto``; a
    cursor ``start`` (the last key read) resumes within the partition."""
    if is_whole(partition):
        return whole_pages()
    return range_pages(partition.spec.get("after") if start is None else start, partition.spec.get("upto"))


def take_until(
    pages: Iterator[tuple[PointBatch, Any]], inside: Callable[[PointBatch], tuple[PointBatch, bool]]
) -> Iterator[tuple[PointBatch, Any]]:
    """Pages of a reader until the partition ends: ``inside(page)`` returns the part of the page within the
    partition and whether the partition ends in it (the cursor after that last page is None)."""
    for page, cursor in pages:
        kept, done = inside(page)
        if done:
            if len(kept):
                yield kept, None
            return
        yield kept, cursor
