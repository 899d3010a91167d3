"""The neighbour graph shared by every pass-2 detector: k nearest neighbours of every point.

Exact blocked search (float32 matrix products, memory bounded by the block size) up to ``EXACT_LIMIT`` valid
points; an approximate graph (pynndescent) beyond it. Similarities follow the collection's own distance and are
always *higher = closer*: cosine similarity, dot product, or negative Euclidean distance.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from auditor.types import Distance

if TYPE_CHECKING:
    from auditor.statecache import StoredGraph

log = logging.getLogger(__name__)

#: Exact up to here (``benchmarks/graph_speed.py --crossover``, 2 cores, 384-d): exact 10.1 s at 20k against
#: pynndescent's 1.1 s plus ~3.7 s once per process to load its kernels, so a one-shot scan crosses over near
#: 13k. Kept at 20k because the exact graph has no approximation error (approximate graphs can lose
#: near-duplicates) and is the one incremental scans patch in place; the price is at most ~6 s.
EXACT_LIMIT = 20_000
#: Elements of one similarity block (rows x all points) held at once: 32M float32 = 128 MiB.
_BLOCK_ELEMENTS = 32 * 1024 * 1024
#: Rows read from the memmap per step while gathering valid vectors.
_GATHER_ROWS = 65_536


@dataclass
class NeighbourGraph:
    """``indices[i]`` are the row numbers of point i's nearest neighbours (closest first, self excluded,
    -1 where fewer than k exist); ``sims[i]`` their similarities (higher = closer, ``-inf`` where absent);
    ``exact`` says whether the graph is exact or approximate."""

    indices: npt.NDArray[np.int64]
    sims: npt.NDArray[np.float32]
    distance: Distance
    exact: bool

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    def distances(self) -> npt.NDArray[np.float32]:
        """Dissimilarity (higher = farther): 1 - cosine, -dot, or Euclidean distance."""
        if self.distance is Distance.COSINE:
            return (1.0 - self.sims).astype(np.float32)
        return (-self.sims).astype(np.float32)

    def truncated(self, k: int) -> NeighbourGraph:
        """The same graph cut to the ``k`` closest neighbours (a view, no copy)."""
        k = min(k, self.k)
        return NeighbourGraph(self.indices[:, :k], self.sims[:, :k], self.distance, self.exact)

    def k_occurrence(self, k: int | None = None) -> npt.NDArray[np.int64]:
        """How many points list each point among their ``k`` nearest (hubness), int64 ``(n,)``."""
        idx = self.indices[:, : (k or self.k)]
        idx = idx[idx >= 0]
        return np.bincount(idx, minlength=len(self.indices)).astype(np.int64)


def prepare(vectors: npt.NDArray[np.float32], distance: Distance) -> npt.NDArray[np.float32]:
    """Vectors in the form the similarity is a dot product of: unit-normalised for cosine."""
    x = np.asarray(vectors, dtype=np.float32)
    if distance is Distance.COSINE:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        x = x / norms
    return x


def _valid_rows(n: int, valid: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.int64]:
    return np.arange(n, dtype=np.int64) if valid is None else np.flatnonzero(valid).astype(np.int64)


def gather(
    vectors: npt.NDArray[np.float32], rows: npt.NDArray[np.int64], distance: Distance
) -> npt.NDArray[np.float32]:
    """``prepare``-d copy of ``vectors[rows]`` read in slices, so a memmap is never materialised twice (the slices
    read leave this process's resident set as they are copied: :func:`release_pages`)."""
    out = np.empty((len(rows), vectors.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), _GATHER_ROWS):
        part = rows[start : start + _GATHER_ROWS]
        lo, hi = int(part[0]), int(part[-1]) + 1
        out[start : start + len(part)] = prepare(np.asarray(vectors[lo:hi])[part - lo], distance)
        release_pages(vectors)
    return out


def release_pages(vectors: Any) -> None:
    """Unmap the resident pages of a read-only file-backed memmap (the point table's spill file) from this process.

    Why: a page of the memmap once read counts in the process's resident set until it is unmapped, so a 1M x 384
    scan held 1.5 GB of file pages on top of the normalised copy NN-descent searches (peak RSS 7.0 GiB before issue
    18). ``MADV_DONTNEED`` on a shared read-only mapping drops only the mapping: the data stays in the kernel's page
    cache (reclaimable, re-read on the next touch by a minor fault). No-op for in-memory arrays and where
    ``madvise`` is missing."""
    base = vectors
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if isinstance(base, mmap.mmap) and advice is not None:
        with contextlib.suppress(OSError, ValueError):
            base.madvise(advice)


def row_norms(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Euclidean norm of every row, read in slices (``vectors`` may be the point table's memmap)."""
    out = np.empty(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), _GATHER_ROWS):
        out[start : start + _GATHER_ROWS] = np.linalg.norm(np.asarray(vectors[start : start + _GATHER_ROWS]), axis=1)
        release_pages(vectors)
    return out


def exact_graph(
    vectors: npt.NDArray[np.float32], k: int, distance: Distance, valid: npt.NDArray[np.bool_] | None = None
) -> NeighbourGraph:
    """Exact kNN by blocked matrix products; rows not ``valid`` are neither queried nor returned."""
    n = len(vectors)
    valid_rows = _valid_rows(n, valid)
    indices = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    m = len(valid_rows)
    kk = min(k, m - 1)
    if kk <= 0:
        return NeighbourGraph(indices, sims, distance, exact=True)
    search = _ExactSearch(gather(vectors, valid_rows, distance), distance)
    top, top_s = search.top(np.arange(m, dtype=np.int64), kk)
    indices[valid_rows, :kk] = valid_rows[top]
    sims[valid_rows, :kk] = top_s
    return NeighbourGraph(indices, sims, distance, exact=True)


class _ExactSearch:
    """Blocked exact similarity search among the rows of ``base`` (``prepare``-d vectors)."""

    def __init__(self, base: npt.NDArray[np.float32], distance: Distance) -> None:
        self.base = base
        self.distance = distance
        self.sq = (base * base).sum(axis=1) if distance in (Distance.EUCLID, Distance.MANHATTAN) else None
        self.block_rows = int(max(16, min(4096, _BLOCK_ELEMENTS // max(len(base), 1))))

    def blocks(self, queries: npt.NDArray[np.int64]) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        """``(query rows, similarity block)`` per block of queries; a query's own column is ``-inf``."""
        for start in range(0, len(queries), self.block_rows):
            q = queries[start : start + self.block_rows]
            s = self.base[q] @ self.base.T
            if self.sq is not None:
                # -||a-b|| from the dot product; clipped at 0 against rounding
                s = -np.sqrt(np.maximum(self.sq[q, None] + self.sq[None, :] - 2.0 * s, 0.0))
            s[np.arange(len(q)), q] = -np.inf  # exclude self
            yield q, s

    @staticmethod
    def top_of(s: npt.NDArray[np.float32], kk: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``kk`` largest entries of every row of ``s``, largest first (exactly tied entries in either order)."""
        torch = _torch() if s.size >= _TORCH_TOPK_ELEMENTS else None
        if torch is not None:
            top_s, top = torch.topk(torch.from_numpy(np.ascontiguousarray(s)), kk, dim=1, largest=True, sorted=True)
            return top.numpy().astype(np.int64), top_s.numpy()
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        part_s = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-part_s, axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_s, order, axis=1)

    def top(self, queries: npt.NDArray[np.int64], kk: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``kk`` most similar rows of each query row (self excluded), closest first."""
        idx = np.empty((len(queries), kk), dtype=np.int64)
        sims = np.empty((len(queries), kk), dtype=np.float32)
        done = 0
        for q, s in self.blocks(queries):
            idx[done : done + len(q)], sims[done : done + len(q)] = self.top_of(s, kk)
            done += len(q)
        return idx, sims


#: Similarity blocks at least this large take their top k from torch (below it numpy is quicker than the import).
_TORCH_TOPK_ELEMENTS = 4 * 1024 * 1024


def _torch() -> Any:
    """torch (installed with sentence-transformers) for its top-k, else None.

    Why: ``numpy.argpartition`` over a 4096 x 10,000 float32 block took 0.4-1.4 s on 2 cores, ``torch.topk`` 0.05 s
    (a heap per row, threaded); the exact per-tenant graphs of a 100k-point, ten-tenant scan spent 12 of their 18 s
    in argpartition (benchmarks/results/in-process-speed.md)."""
    try:
        import torch
    except ImportError:  # a stripped environment: the numpy path gives the same lists
        return None
    return torch


def _pair_sims(
    data: npt.NDArray[np.float32], neighbours: npt.NDArray[np.int64], distance: Distance
) -> npt.NDArray[np.float32]:
    """Similarity of every row of ``data`` to its listed neighbours (local row numbers), blockwise."""
    out = np.empty(neighbours.shape, dtype=np.float32)
    step = 16_384
    for start in range(0, len(data), step):
        a = data[start : start + step]
        b = data[neighbours[start : start + step]]
        if distance in (Distance.EUCLID, Distance.MANHATTAN):
            out[start : start + step] = -np.linalg.norm(b - a[:, None, :], axis=2)
        else:
            out[start : start + step] = np.einsum("nd,nkd->nk", a, b)
    return out


def approximate_graph(
    vectors: npt.NDArray[np.float32],
    k: int,
    distance: Distance,
    valid: npt.NDArray[np.bool_] | None = None,
    *,
    seed: int = 0,
    n_jobs: int | None = None,
) -> NeighbourGraph:
    """Approximate kNN graph by NN-descent (pynndescent); similarities from its own float32 distances (dot
    product: exact dot products of the candidates, re-ranked).

    Why pynndescent: on 1M x 384 on 2 cores it built the all-points k=10 graph in 43 s at recall 0.984 (issue 3's
    measurement; here, searching k + 8 candidates gave recall@10 0.997 at 100k, see ``_candidates``), where
    faiss HNSW (defaults) took 3.6 min at recall 0.93 and hnswlib / faiss IVF took 6-10 min (issue 3 and
    ``benchmarks/graph_speed.py``). Cosine runs as Euclidean search on unit vectors (same order, no second
    normalised copy). Dot product is not a metric NN-descent can search; its graph is the cosine graph with
    ``2k`` candidates re-ranked by the raw dot product, exact when norms are equal, approximate otherwise.
    Peak memory is one float32 copy of the valid vectors plus the NN-descent heaps (~2 GiB at 1M x 384).
    """
    from pynndescent import NNDescent

    try:
        from auditor.nndescent_cache import cached_nn_descent
    except ImportError:  # a pynndescent without the internals the cached copy calls: compile its own
        cached_nn_descent = contextlib.nullcontext  # type: ignore[assignment]

    n = len(vectors)
    valid_rows = _valid_rows(n, valid)
    m = len(valid_rows)
    indices = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    kk = min(k, m - 1)
    if kk <= 0:
        return NeighbourGraph(indices, sims, distance, exact=False)
    search_as = Distance.COSINE if distance is Distance.DOT else distance
    data = gather(vectors, valid_rows, search_as)
    candidates = _candidates(kk, m, distance)
    metric = "manhattan" if distance is Distance.MANHATTAN else "euclidean"
    _cache_pynndescent_kernels()
    with warnings.catch_warnings(), cached_nn_descent():
        # tiny inputs (fewer points than its tree leaves) make it warn; _drop_self pads any missing neighbour
        warnings.filterwarnings("ignore", message="Failed to correctly find n_neighbors")
        warnings.filterwarnings("ignore", message="Cannot cache compiled function")
        index = NNDescent(
            # pynndescent's own tree count (10-12): 5 trees kept the mean recall (0.997 at 1M) but left ~0.4% of
            # points with wrong lists, which then ranked as outliers (planted-outlier AP 0.715 vs 1.0 at 1M)
            data, n_neighbors=candidates + 1, metric=metric, random_state=seed, low_memory=True,
            n_jobs=n_jobs or os.cpu_count() or 1, compressed=True, verbose=False,
        )
    found, found_d = index.neighbor_graph
    del index, data  # the search copy (1.5 GB at 1M x 384) is not needed past this point
    local, local_d = _drop_self(np.asarray(found, dtype=np.int64), np.asarray(found_d, dtype=np.float32), candidates)
    if distance is Distance.DOT:
        # re-rank the cosine candidates by the raw dot product
        data = gather(vectors, valid_rows, Distance.DOT)
        pair = _pair_sims(data, np.maximum(local, 0), distance)
        pair[local < 0] = -np.inf
        order = np.argsort(-pair, axis=1, kind="stable")[:, :kk]
        top = np.take_along_axis(local, order, axis=1)
        top_s = np.take_along_axis(pair, order, axis=1)
    else:
        # NN-descent's own distances, already in order: cosine from the Euclidean distance of unit vectors
        # (1 - d^2/2 keeps the digits a dot product near 1 loses), Euclid and Manhattan negated
        top, dist = local[:, :kk], local_d[:, :kk]
        top_s = (1.0 - 0.5 * dist * dist) if distance is Distance.COSINE else -dist
        top_s = np.where(top >= 0, top_s, -np.inf).astype(np.float32)
    indices[valid_rows, :kk] = np.where(top >= 0, valid_rows[np.maximum(top, 0)], -1)
    sims[valid_rows, :kk] = top_s
    return NeighbourGraph(indices, sims, distance, exact=False)


_KERNELS_CACHED = False


def _cache_pynndescent_kernels() -> None:
    """Let numba cache pynndescent's compiled kernels on disk (once per process).

    pynndescent declares its heaviest parallel kernels ``cache=False``, so every new process spent 55-110 s of
    numba compilation before the first graph (measured: 55 s at 3,000 points, 108 of 120 s at 100k on 2 cores).
    With on-disk caching a process after the first paid ~22 s, because numba refuses to cache the top-level
    ``nn_descent`` ("uses dynamic globals"; it calls ``numba.get_num_threads``, a function pointer); that one now
    runs as the cacheable copy in ``auditor.nndescent_cache`` (a later process loads everything: ~4 s at 3,000
    points). numba writes the cache beside the package or, if that is read-only, in its user-wide cache
    directory (``NUMBA_CACHE_DIR`` overrides)."""
    global _KERNELS_CACHED
    if _KERNELS_CACHED:
        return
    import importlib
    import pkgutil

    import pynndescent
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    for info in pkgutil.iter_modules(pynndescent.__path__):
        module = importlib.import_module(f"pynndescent.{info.name}")
        for obj in list(vars(module).values()):
            if isinstance(obj, Dispatcher) and isinstance(getattr(obj, "_cache", None), NullCache):
                try:
                    obj.enable_caching()
                except Exception as e:  # a kernel numba cannot cache just compiles as before
                    log.debug("numba cannot cache %s: %s", obj.py_func.__qualname__, e)
    _KERNELS_CACHED = True


def _candidates(kk: int, m: int, distance: Distance) -> int:
    """Neighbours NN-descent searches for a k-NN graph. With exactly k it reached recall@10 0.951 on 100k
    clustered 384-d vectors; k + max(8, k/2), cut to the k closest by exact similarity, reached 0.997 for about
    the same time (benchmarks/results/embedding.md). Dot product re-ranks 2k cosine candidates by raw dot."""
    return min(m - 1, 2 * kk if distance is Distance.DOT else kk + max(8, kk // 2))


def _drop_self(
    found: npt.NDArray[np.int64], dist: npt.NDArray[np.float32], keep: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Neighbour lists (and their distances) without the point itself, wherever NN-descent put it; ``keep``
    columns, -1 / inf padded."""
    rows = np.arange(len(found))[:, None]
    not_self = (found != rows) & (found >= 0)
    # stable sort moves the self entry (and misses) to the end while keeping the distance order
    order = np.argsort(~not_self, axis=1, kind="stable")
    mask = np.take_along_axis(not_self, order, axis=1)[:, :keep]
    out = np.where(mask, np.take_along_axis(found, order, axis=1)[:, :keep], -1)
    out_d = np.where(mask, np.take_along_axis(dist, order, axis=1)[:, :keep], np.inf)
    return np.ascontiguousarray(out), np.ascontiguousarray(out_d, dtype=np.float32)


def build_graph(
    vectors: npt.NDArray[np.float32],
    k: int,
    distance: Distance,
    valid: npt.NDArray[np.bool_] | None = None,
    *,
    exact_limit: int | None = None,
    seed: int = 0,
) -> NeighbourGraph:
    """The scan's neighbour graph: exact up to ``exact_limit`` (default ``EXACT_LIMIT``) valid points,
    approximate (pynndescent) beyond. ``vectors`` may be the float32 memmap of the point table."""
    limit = EXACT_LIMIT if exact_limit is None else exact_limit
    m = len(vectors) if valid is None else int(np.count_nonzero(valid))
    if m <= limit:
        return exact_graph(vectors, k, distance, valid)
    log.info("building an approximate %d-NN graph over %d points (pynndescent)", k, m)
    return approximate_graph(vectors, k, distance, valid, seed=seed)


def patch_graph(
    vectors: npt.NDArray[np.float32],
    k: int,
    distance: Distance,
    valid: npt.NDArray[np.bool_],
    previous: StoredGraph,
    reuse: npt.NDArray[np.int64],
) -> tuple[NeighbourGraph, dict[str, int]] | None:
    """This scan's graph from an earlier scan's, recomputing only what changed; None when it cannot.

    ``reuse[i]`` is the earlier row of current row ``i`` when the point's vector is unchanged, else -1. An
    unchanged point keeps its list, merged with the new or moved points that come closer than its k-th
    neighbour; a point that lost a neighbour (deleted or moved) and every new or moved point are searched
    exactly. The result is exact when the earlier graph was (up to the order of exactly tied neighbours), and
    no worse than it when it was approximate. Cost: O((changed + their reverse neighbours) x n x d).
    """
    n = len(vectors)
    valid_rows = _valid_rows(n, valid)
    m = len(valid_rows)
    kk = min(k, m - 1)
    if previous.distance is not distance or previous.indices.shape[1] < kk or kk <= 0:
        return None
    position = previous.positions()
    prev_row = reuse[valid_rows].copy()
    has = prev_row >= 0
    prev_row[has] = np.where(position[prev_row[has]] >= 0, prev_row[has], -1)  # only rows the graph covered
    kept = np.flatnonzero(prev_row >= 0)
    prev_to_local = np.full(previous.size, -1, dtype=np.int64)
    prev_to_local[prev_row[kept]] = kept
    old = previous.indices[position[prev_row[kept]], :kk]
    old_local = np.where(old >= 0, prev_to_local[np.maximum(old, 0)], -1)
    # a list that lost an entry, or was short (fewer points than k earlier), must be searched again
    dirty = (old_local < 0).any(axis=1)
    clean = kept[~dirty]
    idx = np.full((m, kk), -1, dtype=np.int64)
    sims = np.full((m, kk), -np.inf, dtype=np.float32)
    idx[clean] = old_local[~dirty]
    sims[clean] = previous.sims[position[prev_row[clean]], :kk]
    moved = np.setdiff1d(np.arange(m, dtype=np.int64), kept, assume_unique=True)
    search = _ExactSearch(gather(vectors, valid_rows, distance), distance)
    # each clean row admits a moved point that beats its current k-th neighbour
    bar = np.full(m, np.inf, dtype=np.float32)
    bar[clean] = sims[clean, kk - 1]
    pairs: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]] = []
    for q, s in search.blocks(moved):
        idx[q], sims[q] = search.top_of(s, kk)
        qi, rows = np.nonzero(s > bar[None, :])
        pairs.append((rows.astype(np.int64), q[qi], s[qi, rows]))
    if pairs:
        _merge_candidates(idx, sims, *(np.concatenate(parts) for parts in zip(*pairs, strict=True)))
    again = kept[dirty]
    if len(again):
        idx[again], sims[again] = search.top(again, kk)
    indices = np.full((n, k), -1, dtype=np.int64)
    out_sims = np.full((n, k), -np.inf, dtype=np.float32)
    indices[valid_rows, :kk] = np.where(idx >= 0, valid_rows[np.maximum(idx, 0)], -1)
    out_sims[valid_rows, :kk] = sims
    counts = {"reused": len(clean), "searched": len(moved) + len(again)}
    return NeighbourGraph(indices, out_sims, distance, previous.exact), counts


def _merge_candidates(
    idx: npt.NDArray[np.int64], sims: npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64], cand: npt.NDArray[np.int64], cand_s: npt.NDArray[np.float32],
) -> None:
    """Merge candidate neighbours ``cand`` (similarity ``cand_s``) into the lists of ``rows``, in place."""
    kk = idx.shape[1]
    order = np.argsort(rows, kind="stable")
    rows, cand, cand_s = rows[order], cand[order], cand_s[order]
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], len(rows)], strict=True):
        r = int(rows[start])
        all_i = np.concatenate([idx[r], cand[start:end]])
        all_s = np.concatenate([sims[r], cand_s[start:end]])
        best = np.argsort(-all_s, kind="stable")[:kk]
        idx[r], sims[r] = all_i[best], all_s[best]


def within_group(
    graph: NeighbourGraph, rows: npt.NDArray[np.int64], group: npt.NDArray[np.bool_], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Each of ``rows``' neighbours in ``graph`` that are members of ``group`` (a boolean mask over the table),
    closest first, cut to ``k``: ``(indices, sims, complete)``, shapes ``(len(rows), k)`` and ``(len(rows),)``,
    ``-1`` / ``-inf`` padded.

    ``complete[i]`` says the list holds ``min(k, members - 1)`` entries. For an exact graph a complete list *is*
    the row's exact k-NN list inside the group: a closer member would have been listed before the k-th one (up
    to the order of exactly tied neighbours); for an approximate graph it is as good as the graph. Rows not
    complete need a search inside the group (:func:`search_within`).
    """
    idx = graph.indices[rows]
    member = (idx >= 0) & group[np.maximum(idx, 0)]
    # stable sort moves members first, keeping the similarity order among them
    order = np.argsort(~member, axis=1, kind="stable")[:, :k]
    keep = np.take_along_axis(member, order, axis=1)
    out = np.where(keep, np.take_along_axis(idx, order, axis=1), -1)
    out_s = np.where(keep, np.take_along_axis(graph.sims[rows], order, axis=1), -np.inf).astype(np.float32)
    if out.shape[1] < k:  # the graph holds fewer than k neighbours per point
        pad = k - out.shape[1]
        out = np.pad(out, ((0, 0), (0, pad)), constant_values=-1)
        out_s = np.pad(out_s, ((0, 0), (0, pad)), constant_values=-np.inf)
    need = min(k, int(np.count_nonzero(group)) - 1)
    return out, out_s, keep.sum(axis=1) >= need


def search_within(
    vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.int64], members: npt.NDArray[np.int64], k: int,
    distance: Distance,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Exact k nearest ``members`` (table rows) of each of ``queries`` (table rows that are members too), self
    excluded, closest first: table row numbers int64 ``(len(queries), k)`` and similarities (higher = closer),
    ``-1`` / ``-inf`` padded. Cost O(len(queries) x len(members) x d): for the few rows the shared graph leaves
    short, not for a whole large group."""
    out = np.full((len(queries), k), -1, dtype=np.int64)
    out_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    kk = min(k, len(members) - 1)
    if kk <= 0 or not len(queries):
        return out, out_s
    search = _ExactSearch(gather(vectors, members, distance), distance)
    local = np.searchsorted(members, queries)
    top, top_s = search.top(local, kk)
    out[:, :kk] = members[top]
    out_s[:, :kk] = top_s
    return out, out_s
