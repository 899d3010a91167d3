"""Per-scan state shared by detectors: settings, the collection's point table (vectors spilled to a memmap),
the previous scan's fingerprints, and the lazily built neighbour graph and embedder."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from auditor.findings import point_key
from auditor.types import MISSING, CollectionInfo, FieldMap, PointId, RecordBatch

if TYPE_CHECKING:
    from auditor.connector import Connector
    from auditor.embedder import Embedder
    from auditor.graph import NeighbourGraph
    from auditor.statecache import StateCache


@dataclass(frozen=True)
class PointState:
    """A point's fingerprint as the ledger last recorded it."""

    vector_hash: str
    payload_hash: str
    text_hash: str | None
    tenant: str | None
    first_scan_id: int | None = None


@dataclass
class ScanSettings:
    """Options of one scan that detectors may read (model, tenants, probes, ...)."""

    model: str | None = None
    device: str | None = None
    embed_batch_size: int = 64
    embed_sample: str | None = None
    tenants: tuple[str, ...] | None = None
    probe: bool = False
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class PointTable:
    """Every scanned point's columns, appended batch by batch; vectors go to a float32 memmap on disk
    so pass 2 sees the whole collection without holding it in RAM."""

    def __init__(self, dim: int, spill_dir: str | os.PathLike[str] | None = None) -> None:
        self.dim = dim
        self._tmp = tempfile.TemporaryDirectory(prefix="vecaudit-", dir=spill_dir)
        self._path = Path(self._tmp.name) / "vectors.f32"
        self._fh: Any = open(self._path, "wb")  # noqa: SIM115 - kept open across batches
        self._writer: futures.ThreadPoolExecutor | None = None
        self._writes: deque[tuple[futures.Future[Any], int | None]] = deque()  # each write and the buffer it reads
        self._buffers: list[npt.NDArray[np.uint8]] = []
        self._current = 0  # the buffer being filled, and how many bytes it holds
        self._fill = 0
        self._vectors: np.memmap[Any, np.dtype[np.float32]] | None = None
        self.ids: list[PointId] = []
        self.dim_ok_parts: list[npt.NDArray[np.bool_]] = []
        self._valid_parts: list[npt.NDArray[np.bool_]] = []
        self.texts: list[str | None] = []
        self.tenants: list[str | None] = []
        self.doc_ids: list[Any] = []
        self.timestamps: list[Any] = []
        self.vector_hashes: list[str] = []
        self.payload_hashes: list[str] = []
        self.text_hashes: list[str | None] = []
        self._index: dict[PointId, int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def append(self, batch: RecordBatch) -> None:
        if self._fh is None:
            raise RuntimeError("point table is sealed")
        vectors = np.ascontiguousarray(batch.vectors, dtype=np.float32)
        self._spill(vectors)
        dim_ok = batch.dim_ok
        self.ids.extend(batch.ids)
        self.dim_ok_parts.append(dim_ok)
        self._valid_parts.append(dim_ok & _usable_rows(vectors))
        self.texts.extend(batch.texts)
        self.tenants.extend(batch.tenants)
        self.doc_ids.extend(None if d is MISSING else d for d in batch.doc_ids)
        self.timestamps.extend(None if t is MISSING else t for t in batch.timestamps)
        self.vector_hashes.extend(batch.vector_hashes)
        self.payload_hashes.extend(batch.payload_hashes)
        self.text_hashes.extend(batch.text_hashes)

    def _spill(self, vectors: npt.NDArray[np.float32]) -> None:
        """Append ``vectors`` to the spill file: pages are copied into a chunk buffer of ``_SPILL_CHUNK`` bytes, and
        each full chunk is written on the writer thread while pass 1 fills the next one.

        Why a thread: writing the file is the kernel's work (page-cache pages, 0.1-1.2 s of system time for
        100k x 384 on this project's box) that held pass 1's one thread; ``write`` releases the GIL, so it now runs
        beside the next pages' parsing and hashing. Why chunks: one hand-over of the GIL per page (196 at 100k)
        stalled pass 1 by up to milliseconds each on a loaded box. The ``_SPILL_PENDING + 1`` buffers are allocated
        once and reused in turn (a buffer is filled again only after its write), so the spill holds a fixed ~24 MiB
        however large the collection, and no page is kept by reference (a detector's ``observe`` may still change
        the batch's array). Chunks are written in order (one worker); a failed write (disk full) is raised here or
        by :meth:`seal`."""
        data = vectors.reshape(-1).view(np.uint8)
        if len(data) > _SPILL_CHUNK:  # a page larger than a chunk (huge pages of wide vectors): on its own
            self._submit_chunk()
            self._submit(data.tobytes(), None)
            return
        if self._fill + len(data) > _SPILL_CHUNK:
            self._submit_chunk()
        if not self._buffers:
            self._buffers = [np.empty(_SPILL_CHUNK, dtype=np.uint8) for _ in range(_SPILL_PENDING + 1)]
        self._buffers[self._current][self._fill : self._fill + len(data)] = data
        self._fill += len(data)

    def _submit_chunk(self) -> None:
        """Write the buffer being filled (if it holds anything) and make the next one, once written, current."""
        if not self._fill:
            return
        self._submit(self._buffers[self._current][: self._fill], self._current)
        self._current = (self._current + 1) % len(self._buffers)
        self._fill = 0
        while any(used == self._current for _, used in self._writes):
            self._writes.popleft()[0].result()

    def _submit(self, data: Any, buffer: int | None) -> None:
        if self._writer is None:
            self._writer = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vecaudit-spill")
        self._writes.append((self._writer.submit(self._fh.write, data), buffer))
        while self._writes and self._writes[0][0].done():
            self._writes.popleft()[0].result()

    def _finish_writes(self) -> None:
        """Write the last chunk, wait for every pending write (raising the first failure), stop the writer."""
        try:
            self._submit_chunk()
            while self._writes:
                self._writes.popleft()[0].result()
        finally:
            self._writes.clear()
            self._buffers, self._current, self._fill = [], 0, 0
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None

    def seal(self) -> None:
        """Finish pass 1: close the spill file and map it for reading."""
        if self._fh is not None:
            self._finish_writes()
            self._fh.close()
            self._fh = None
        n = len(self.ids)
        if n and self.dim:
            self._vectors = np.memmap(self._path, dtype=np.float32, mode="r", shape=(n, self.dim))

    @property
    def vectors(self) -> npt.NDArray[np.float32]:
        """float32 ``(n, dim)`` memmap; rows with ``dim_ok`` False are zero-filled."""
        if self._vectors is None:
            return np.zeros((len(self.ids), self.dim), dtype=np.float32)
        return self._vectors

    @property
    def dim_ok(self) -> npt.NDArray[np.bool_]:
        return np.concatenate(self.dim_ok_parts) if self.dim_ok_parts else np.zeros(0, dtype=bool)

    def valid_mask(self) -> npt.NDArray[np.bool_]:
        """Rows usable for geometry: right dimension, all finite, not all zero (computed page by page as pass 1
        appended them, so the spilled vectors are not read again for it)."""
        return np.concatenate(self._valid_parts) if self._valid_parts else np.zeros(0, dtype=bool)

    def row_of(self, point_id: PointId) -> int | None:
        if self._index is None:
            self._index = {pid: i for i, pid in enumerate(self.ids)}
        return self._index.get(point_id)

    def close(self) -> None:
        if self._fh is not None:
            # closing after a failed write (already raised to the scan): the file goes with the folder
            with contextlib.suppress(OSError):
                self._finish_writes()
            self._fh.close()
            self._fh = None
        self._vectors = None
        self._tmp.cleanup()


#: Bytes of vectors gathered before a write, and how many chunks may wait for their write while the next fills:
#: the spill holds ``(_SPILL_PENDING + 1) * _SPILL_CHUNK`` bytes of buffers during pass 1 (24 MiB).
_SPILL_CHUNK = 8 * 1024 * 1024
_SPILL_PENDING = 2


def _usable_rows(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """Per row of a float32 ``(n, d)`` page: all finite and not all zero (the geometry part of the valid mask)."""
    return np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)


class ScanContext:
    """What a detector may read during a scan. Expensive pieces (graph, embedder) are built on first use
    and shared, so every detector sees the same neighbour graph."""

    def __init__(
        self,
        *,
        info: CollectionInfo,
        field_map: FieldMap,
        collection_key: str,
        settings: ScanSettings | None = None,
        previous: Mapping[str, PointState] | None = None,
        connector: Connector | None = None,
        spill_dir: str | os.PathLike[str] | None = None,
        progress: Callable[..., Any] | None = None,
    ) -> None:
        self.info = info
        self.field_map = field_map
        self.collection_key = collection_key
        self.settings = settings or ScanSettings()
        self.previous = previous
        self.connector = connector
        self.table = PointTable(info.dim, spill_dir)
        self.progress = progress
        self.shared: dict[str, Any] = {}
        self.notes: list[str] = []
        self._graph: NeighbourGraph | None = None
        self._graph_k = 0
        self._embedder: Embedder | None = None
        self._valid: npt.NDArray[np.bool_] | None = None
        #: Incremental scans: where graphs and re-embeddings are staged for the next scan (None: not kept) ...
        self.state: StateCache | None = None
        #: ... and whether the earlier scan's state there may be reused by this one.
        self.reuse_state = False
        #: Per graph name, how many rows were reused from the earlier scan and how many searched again.
        self.graph_reuse: dict[str, dict[str, int]] = {}
        self._reuse_rows: npt.NDArray[np.int64] | None = None
        #: Seconds per stage ("pass1", "<detector>.finish", "graph.all", ...): see :meth:`add_seconds`.
        self.seconds: dict[str, float] = {}

    def request_neighbours(self, k: int) -> None:
        """Declare before pass 2 that some detector needs ``k`` neighbours (the graph is built once)."""
        self._graph_k = max(self._graph_k, k)

    def valid_mask(self) -> npt.NDArray[np.bool_]:
        if self._valid is None:
            self._valid = self.table.valid_mask()
        return self._valid

    def graph(self, k: int | None = None) -> NeighbourGraph:
        """The shared k-nearest-neighbour graph over all valid vectors of the collection."""
        want = max(k or 0, self._graph_k, 1)
        if self._graph is None or self._graph.k < want:
            self._graph = self._graph_over("all", self.valid_mask(), want)
        return self._graph

    def subgraph(self, name: str, members: npt.NDArray[np.bool_], k: int) -> NeighbourGraph:
        """A k-NN graph over the valid rows where ``members`` is True (e.g. one tenant's points); like the
        shared graph, an incremental scan patches the one the last scan built under the same ``name``."""
        return self._graph_over(f"sub:{name}", self.valid_mask() & members, k)

    def _graph_over(self, name: str, valid: npt.NDArray[np.bool_], k: int) -> NeighbourGraph:
        from auditor.graph import build_graph, patch_graph

        started = time.perf_counter()
        graph = None
        if self.state is not None and self.reuse_state:
            stored = self.state.graph(name)
            reuse = self._earlier_rows()
            patched = None if stored is None or reuse is None else patch_graph(
                self.table.vectors, k, self.info.distance, valid, stored, reuse
            )
            if patched is not None:
                graph, self.graph_reuse[name] = patched
        if graph is None:
            graph = build_graph(self.table.vectors, k, self.info.distance, valid)
        if self.state is not None:
            try:
                self.state.stage_graph(name, graph, valid)
            except OSError as e:
                self.note(f"incremental state not kept: {e}")
                self.state = None
        self.add_seconds(f"graph.{name}", time.perf_counter() - started)
        return graph

    def add_seconds(self, stage: str, seconds: float) -> None:
        """Add to the wall time spent in ``stage`` (kept in the scan's ``counts.seconds``)."""
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def _earlier_rows(self) -> npt.NDArray[np.int64] | None:
        """Per row, the earlier scan's row of the same point with the same vector, else -1 (None: no state)."""
        if self._reuse_rows is None:
            rows = self.state.rows() if self.state is not None else None
            if rows is None:
                return None
            by_key, hashes = rows
            reuse = np.full(len(self.table), -1, dtype=np.int64)
            for i, (pid, vector_hash) in enumerate(zip(self.table.ids, self.table.vector_hashes, strict=True)):
                r = by_key.get(point_key(pid))
                if r is not None and hashes[r] == vector_hash:
                    reuse[i] = r
            self._reuse_rows = reuse
        return self._reuse_rows

    def embedder(self) -> Embedder:
        """The sentence-transformers model of this scan (bundled all-MiniLM-L6-v2 unless ``--model``)."""
        if self._embedder is None:
            from auditor.embedder import Embedder

            self._embedder = Embedder(
                self.settings.model, device=self.settings.device, batch_size=self.settings.embed_batch_size
            )
            if self.state is not None:
                self._embedder.remember(self.state.encodings if self.reuse_state else None)
        return self._embedder

    def embedder_if_loaded(self) -> Embedder | None:
        """The embedder when some detector asked for it, else None (never loads the model)."""
        return self._embedder

    def note(self, message: str) -> None:
        """A line for the scan summary (e.g. "re-embedded a sample of 10,000 of 52,311 points")."""
        self.notes.append(message)

    def new_or_changed(self) -> list[bool] | None:
        """Per row, whether the point is new or its vector or text changed since the last completed scan (None:
        no earlier scan of this collection, so nothing can be told apart)."""
        if not self.previous:
            return None
        table = self.table
        out = []
        for pid, vector_hash, text_hash in zip(table.ids, table.vector_hashes, table.text_hashes, strict=True):
            old = self.previous.get(point_key(pid))
            out.append(old is None or old.vector_hash != vector_hash or old.text_hash != text_hash)
        return out

    def rows_by_tenant(self) -> dict[str | None, list[int]]:
        groups: dict[str | None, list[int]] = {}
        for i, t in enumerate(self.table.tenants):
            groups.setdefault(t, []).append(i)
        return groups

    def close(self) -> None:
        self.table.close()
