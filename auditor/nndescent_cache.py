"""Disk-cacheable NN-descent entry points, so a new process loads pynndescent's graph kernels instead of compiling
them (~20 s on 2 cores, the bulk of a cold scan's pass 2 at 100k points).

pynndescent's ``nn_descent`` cannot be cached by numba: it takes the distance function as an argument (a dispatcher
type that differs between processes) and calls ``numba.get_num_threads`` (a run-time function pointer, which numba
calls a "dynamic global"). The two functions below are pynndescent 0.68's ``nn_descent`` and
``nn_descent_internal`` with the distance fixed at compile time and the thread count passed in; everything they
call is pynndescent's own. Adapted from pynndescent (BSD 2-Clause, Copyright (c) 2018, Leland McInnes).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pynndescent
from numba.core.errors import NumbaError
from pynndescent import distances as pynnd_dist
from pynndescent import pynndescent_ as pynnd
from pynndescent.utils import build_candidates_owner, deheap_sort, make_heap

log = logging.getLogger(__name__)


@numba.njit()
def _descend(current_graph, data, n_neighbors, rng_state, max_candidates, dist, n_iters, delta, kernel,
             n_threads):
    """pynndescent's ``nn_descent_internal`` with ``n_threads`` given (numba cannot cache the lookup)."""
    n_vertices = data.shape[0]
    block_size = 16384
    n_blocks = n_vertices // block_size
    max_updates_per_thread = (
        int((max_candidates**2 + max_candidates * (max_candidates - 1) / 2) * block_size / n_threads) + 1024
    )
    update_array = np.empty((n_threads, max_updates_per_thread, 3), dtype=np.float32)
    n_updates_per_thread = np.zeros(n_threads, dtype=np.int32)
    if n_threads > 1:
        sorted_updates = np.empty((n_threads, 2 * max_updates_per_thread, 3), dtype=np.float32)
    else:
        sorted_updates = np.empty((1, 1, 3), dtype=np.float32)
    block_offsets = np.zeros((n_threads, n_threads + 1), dtype=np.int64)
    new_candidate_indices = np.full((n_vertices, max_candidates), -1, dtype=np.int32)
    new_candidate_priority = np.full((n_vertices, max_candidates), np.inf, dtype=np.float32)
    old_candidate_indices = np.full((n_vertices, max_candidates), -1, dtype=np.int32)
    old_candidate_priority = np.full((n_vertices, max_candidates), np.inf, dtype=np.float32)
    active = np.ones(n_vertices, dtype=np.uint8)
    reverse_dst = np.empty(n_vertices * n_neighbors, dtype=np.int32)
    reverse_src = np.empty(n_vertices * n_neighbors, dtype=np.int32)
    bucket_bounds = np.zeros((n_threads, n_threads + 1), dtype=np.int64)
    for _ in range(n_iters):
        new_candidates, old_candidates = build_candidates_owner(
            current_graph, max_candidates, rng_state, n_threads, new_candidate_indices, new_candidate_priority,
            old_candidate_indices, old_candidate_priority, active, reverse_dst, reverse_src, bucket_bounds,
        )
        changes = pynnd.process_candidates(
            data, dist, current_graph, new_candidates, old_candidates, n_blocks, block_size, n_threads,
            update_array, n_updates_per_thread, sorted_updates, block_offsets, kernel,
        )
        if changes <= delta * n_neighbors * data.shape[0]:
            return


@numba.njit()
def _nn_descent(data, n_neighbors, rng_state, max_candidates, dist, n_iters, delta, leaf_array, kernel,
                n_threads):
    """pynndescent's ``nn_descent`` (tree-initialised, no initial graph) with ``n_threads`` given."""
    current_graph = make_heap(data.shape[0], n_neighbors)
    pynnd.init_rp_tree(data, dist, current_graph, leaf_array, n_threads=n_threads)
    pynnd.init_random(n_neighbors, data, current_graph, dist, rng_state)
    _descend(current_graph, data, n_neighbors, rng_state, max_candidates, dist, n_iters, delta, kernel, n_threads)
    return deheap_sort(current_graph[0], current_graph[1])


@numba.njit(cache=True)
def _nn_descent_squared_euclidean(data, n_neighbors, rng_state, max_candidates, n_iters, delta, leaf_array, kernel,
                                  n_threads):
    return _nn_descent(data, n_neighbors, rng_state, max_candidates, pynnd_dist.squared_euclidean, n_iters, delta,
                       leaf_array, kernel, n_threads)


@numba.njit(cache=True)
def _nn_descent_manhattan(data, n_neighbors, rng_state, max_candidates, n_iters, delta, leaf_array, kernel,
                          n_threads):
    return _nn_descent(data, n_neighbors, rng_state, max_candidates, pynnd_dist.manhattan, n_iters, delta,
                       leaf_array, kernel, n_threads)


_CACHED: dict[Any, Any] = {  # distance dispatcher -> cached kernel dispatcher
    pynnd_dist.squared_euclidean: _nn_descent_squared_euclidean,
    pynnd_dist.manhattan: _nn_descent_manhattan,
}
_PATCH_LOCK = threading.Lock()


def _routed(original: Callable[..., Any]) -> Callable[..., Any]:
    """``nn_descent`` that sends the cases the cached kernels cover to them and everything else to ``original``."""

    def nn_descent(data: Any, n_neighbors: int, rng_state: Any, max_candidates: int = 50,
                   dist: Any = pynnd_dist.euclidean, n_iters: int = 10, delta: float = 0.001,
                   init_graph: Any = pynnd.EMPTY_GRAPH, rp_tree_init: bool = True, leaf_array: Any = None,
                   low_memory: bool = True, verbose: bool = False, kernel: int = 0) -> Any:
        cached = _CACHED.get(dist)
        if cached is not None and rp_tree_init and leaf_array is not None and init_graph[0].shape[0] == 1 \
                and not verbose:
            try:
                return cached(data, n_neighbors, rng_state, max_candidates, n_iters, delta, leaf_array, kernel,
                              numba.get_num_threads())
            except NumbaError as e:  # a pynndescent whose internals differ from the copy: its own code still works
                log.warning("cached NN-descent kernel unusable with pynndescent %s (%s); compiling pynndescent's "
                            "own", pynndescent.__version__, e)
                _CACHED.clear()
        return original(data, n_neighbors, rng_state, max_candidates, dist, n_iters, delta, init_graph,
                        rp_tree_init, leaf_array, low_memory, verbose, kernel)

    return nn_descent


def _flush_if_stale() -> None:
    """Drop the kernels' disk cache when pynndescent or numba changed since it was written: numba keys the cache
    on this file only, not on the pynndescent code compiled into it."""
    stamp = f"pynndescent {pynndescent.__version__} numba {numba.__version__}"
    kernels: tuple[Any, ...] = (_nn_descent_squared_euclidean, _nn_descent_manhattan)
    for kernel in kernels:
        marker = Path(kernel._cache._cache_path) / f"{kernel.py_func.__name__}.stamp"
        try:
            if marker.exists() and marker.read_text() == stamp:
                continue
            kernel._cache.flush()
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(stamp)
        except OSError as e:  # an unwritable cache only costs the compile
            log.debug("numba cache stamp for %s: %s", kernel.py_func.__name__, e)


_FRESH = False


@contextlib.contextmanager
def cached_nn_descent() -> Iterator[None]:
    """Within the block, ``pynndescent.NNDescent`` builds its graph with the disk-cached kernels above.

    Why patch the module: ``NNDescent`` calls its module's ``nn_descent`` directly and offers no hook, and
    reimplementing its forest, distance and candidate set-up would copy far more of it. Serialised by a lock, since
    the patch is process-wide."""
    global _FRESH
    with _PATCH_LOCK:
        if not _FRESH:
            _flush_if_stale()
            _FRESH = True
        original = pynnd.nn_descent
        pynnd.nn_descent = _routed(original)
        try:
            yield
        finally:
            pynnd.nn_descent = original
