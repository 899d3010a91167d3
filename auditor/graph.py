"""The neighbour graph shared by every pass-2 detector: k nearest neighbours of every point.

Exact blocked search (float32 matrix products, memory bounded by the block size) for collections up to
``EXACT_LIMIT`` points; an approximate graph beyond it (see ``build_graph``). Similarities follow the
collection's own distance and are always *higher = closer*: cosine similarity, dot product, or negative
Euclidean distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from auditor.types import Distance

EXACT_LIMIT = 50_000
_BLOCK_ROWS = 2048


@dataclass
class NeighbourGraph:
    """``indices[i]`` are the row numbers of point i's nearest neighbours (closest first, self excluded,
    -1 where fewer than k exist); ``sims[i]`` their similarities (higher = closer); ``exact`` says
    whether the graph is exact or approximate."""

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


def prepare(vectors: npt.NDArray[np.float32], distance: Distance) -> npt.NDArray[np.float32]:
    """Vectors in the form the similarity is a dot product of: unit-normalised for cosine."""
    x = np.asarray(vectors, dtype=np.float32)
    if distance is Distance.COSINE:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        x = x / norms
    return x


def exact_graph(
    vectors: npt.NDArray[np.float32], k: int, distance: Distance, valid: npt.NDArray[np.bool_] | None = None
) -> NeighbourGraph:
    """Exact kNN by blocked matrix products; rows not ``valid`` are neither queried nor returned."""
    n = len(vectors)
    valid_rows = np.arange(n) if valid is None else np.flatnonzero(valid)
    indices = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    m = len(valid_rows)
    kk = min(k, m - 1)
    if kk <= 0:
        return NeighbourGraph(indices, sims, distance, exact=True)
    base = prepare(vectors[valid_rows], distance)
    sq = (base * base).sum(axis=1) if distance in (Distance.EUCLID, Distance.MANHATTAN) else None
    for start in range(0, m, _BLOCK_ROWS):
        block = base[start : start + _BLOCK_ROWS]
        s = block @ base.T
        if sq is not None:
            # -||a-b|| from the dot product; clipped at 0 against rounding
            d2 = np.maximum(sq[start : start + len(block), None] + sq[None, :] - 2.0 * s, 0.0)
            s = -np.sqrt(d2)
        rows = np.arange(len(block))
        s[rows, start + rows] = -np.inf  # exclude self
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        part_s = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-part_s, axis=1, kind="stable")
        top = np.take_along_axis(part, order, axis=1)
        target = valid_rows[start : start + len(block)]
        indices[target, :kk] = valid_rows[top]
        sims[target, :kk] = np.take_along_axis(part_s, order, axis=1)
    return NeighbourGraph(indices, sims, distance, exact=True)


def build_graph(
    vectors: npt.NDArray[np.float32], k: int, distance: Distance, valid: npt.NDArray[np.bool_] | None = None
) -> NeighbourGraph:
    """The scan's neighbour graph: exact up to ``EXACT_LIMIT`` valid points."""
    return exact_graph(vectors, k, distance, valid)
