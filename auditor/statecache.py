"""What a `scan --incremental` leaves on disk for the next one of the same collection: the neighbour graphs
(rows named by point key and vector hash) and the texts it re-embedded (by model and text hash).

A cache, not a record: the ledger stays the source of truth. Every reused row is checked against the current
scan's hashes, so a stale, foreign or missing cache only makes the next scan slower, never different. Files are
written atomically under a directory only the owner can read (embeddings are derived from the store's text).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from auditor.graph import NeighbourGraph, StoredGraph
from auditor.types import Distance

__all__ = ["ENV_DIR", "FORMAT_VERSION", "StateCache", "StoredGraph", "default_state_dir"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ENV_DIR = "VECAUDIT_STATE_DIR"


def default_state_dir() -> Path:
    """``$VECAUDIT_STATE_DIR``, else ``$XDG_CACHE_HOME/vecaudit/state``, else ``~/.cache/vecaudit/state``."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "vecaudit" / "state"


class StateCache:
    """The state directory of one collection (named by a hash of its collection key).

    Reading serves the last committed state; a scan stages its own files under names carrying its scan id and
    :meth:`commit` makes them the state (the manifest is renamed into place last, so a crash mid-way leaves the
    earlier state intact), or :meth:`abandon` removes them.
    """

    def __init__(self, root: str | os.PathLike[str], collection_key: str) -> None:
        digest = hashlib.sha256(collection_key.encode("utf-8")).hexdigest()[:24]
        self.root = Path(root).expanduser()
        self.path = self.root / digest
        self.collection_key = collection_key
        self._manifest_cache: dict[str, Any] | None = None
        self._rows: tuple[dict[str, int], list[str]] | None = None
        self._scan_id: int | None = None
        self._staged: dict[str, dict[str, str]] = {"graphs": {}, "encodings": {}}

    # -- reading ------------------------------------------------------------------------------------------
    def _manifest(self) -> dict[str, Any] | None:
        if self._manifest_cache is None:
            try:
                manifest = json.loads((self.path / "manifest.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            if manifest.get("format") != FORMAT_VERSION or manifest.get("collection_key") != self.collection_key:
                return None
            self._manifest_cache = dict(manifest)
        return self._manifest_cache

    def rows(self) -> tuple[dict[str, int], list[str]] | None:
        """Earlier row by point key, and the vector hash of every earlier row; None without a state."""
        if self._rows is None:
            manifest = self._manifest()
            data = _load(self.path / manifest["rows"]) if manifest and manifest.get("rows") else None
            if data is None:
                return None
            self._rows = (
                {str(k): i for i, k in enumerate(data["keys"])},
                [str(h) for h in data["vector_hashes"]],
            )
        return self._rows

    def graph(self, name: str) -> StoredGraph | None:
        """The stored graph ``name`` ("all", "tenant:<label>", ...), or None."""
        manifest = self._manifest()
        rows = self.rows()
        if manifest is None or rows is None or name not in manifest.get("graphs", {}):
            return None
        data = _load(self.path / manifest["graphs"][name])
        if data is None:
            return None
        return StoredGraph(
            rows=np.asarray(data["rows"], dtype=np.int64),
            indices=np.asarray(data["indices"], dtype=np.int64),
            sims=np.asarray(data["sims"], dtype=np.float32),
            distance=Distance(str(data["distance"])),
            exact=bool(data["exact"]),
            size=len(rows[1]),
        )

    def encodings(self, model_key: str) -> dict[bytes, npt.NDArray[np.float32]]:
        """Re-embeddings by text digest that an earlier scan made with the model ``model_key``."""
        manifest = self._manifest()
        name = (manifest or {}).get("encodings", {}).get(model_key)
        data = _load(self.path / name) if name else None
        if data is None:
            return {}
        vectors = np.asarray(data["vectors"], dtype=np.float32)
        return {bytes(k): vectors[i] for i, k in enumerate(np.asarray(data["keys"], dtype=np.uint8))}

    # -- writing ------------------------------------------------------------------------------------------
    def begin(self, scan_id: int) -> None:
        """Start staging the state of scan ``scan_id``."""
        self._scan_id = scan_id
        self._staged = {"graphs": {}, "encodings": {}}

    def _stage_name(self, kind: str, key: str) -> str:
        if self._scan_id is None:
            raise RuntimeError("StateCache.begin was not called")
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path.mkdir(exist_ok=True, mode=0o700)
        return f"{kind}-{self._scan_id}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:16]}.npz"

    def stage_graph(self, name: str, graph: NeighbourGraph, members: npt.NDArray[np.bool_]) -> None:
        """Stage this scan's graph ``name`` built over the rows where ``members`` is True."""
        file = self._stage_name("graph", name)
        rows = np.flatnonzero(members).astype(np.int64)
        _atomic_npz(self.path / file, rows=rows, indices=graph.indices[rows], sims=graph.sims[rows],
                    distance=np.asarray(graph.distance.value), exact=np.asarray(graph.exact))
        self._staged["graphs"][name] = file

    def stage_encodings(self, model_key: str, table: dict[bytes, npt.NDArray[np.float32]]) -> None:
        """Stage the re-embeddings this scan used with model ``model_key``."""
        if not table:
            return
        file = self._stage_name("encodings", model_key)
        _atomic_npz(self.path / file, keys=_digest_rows(list(table)),
                    vectors=np.stack(list(table.values())).astype(np.float32))
        self._staged["encodings"][model_key] = file

    def commit(self, keys: list[str], vector_hashes: list[str]) -> None:
        """Make the staged files, with this scan's rows, the collection's state; remove the earlier state."""
        rows_file = self._stage_name("rows", "rows")
        _atomic_npz(self.path / rows_file, keys=np.asarray(keys, dtype=str),
                    vector_hashes=np.asarray(vector_hashes, dtype=str))
        manifest = {
            "format": FORMAT_VERSION, "collection_key": self.collection_key, "scan_id": self._scan_id,
            "rows": rows_file, **self._staged,
        }
        _atomic_write(self.path / "manifest.json", json.dumps(manifest, indent=1).encode("utf-8"))
        wanted = {"manifest.json", rows_file, *self._staged["graphs"].values(), *self._staged["encodings"].values()}
        self._remove(lambda name: name not in wanted)
        self._manifest_cache, self._rows = manifest, None

    def abandon(self) -> None:
        """Remove what this scan staged; the earlier state stays."""
        prefix = f"-{self._scan_id}-"
        self._remove(lambda name: prefix in name)

    def _remove(self, which: Any) -> None:
        if not self.path.is_dir():
            return
        for path in self.path.iterdir():
            if path.suffix == ".npz" and which(path.name):
                path.unlink(missing_ok=True)


def _digest_rows(digests: list[bytes]) -> npt.NDArray[np.uint8]:
    """Digests as a uint8 matrix (numpy's bytes dtype would drop a digest's trailing zero bytes)."""
    return np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), -1)


def _load(path: Path) -> Any:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        log.info("state cache file %s unreadable (%s): rebuilding", path, e)
        return None


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_npz(path: Path, **arrays: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
