"""File connector: offline audits of exports (``file:///dump.parquet``, ``.jsonl``, ``.npz``), streamed so a
nightly dump of millions of points is read in bounded memory."""

from __future__ import annotations

import glob as globbing
import json
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np

from auditor.connector import Connector, Cursor, SourceURI
from auditor.errors import ConfigError, ConnectorError, StoreNotFoundError
from auditor.partitions import DEFAULT_TARGET_POINTS, Partition, PartitionPlan
from auditor.textsafety import safe_text
from auditor.types import CollectionInfo, Distance, PointBatch, PointId, StoredPoint
from connectors.common import (
    arrow_points,
    arrow_vector_dim,
    arrow_vector_lengths,
    call_backend,
    distance_option,
    first_line,
    guarded_iter,
    majority_length,
    pick_arrow_columns,
)

_FORMATS = (".parquet", ".jsonl", ".npz")
_CORRUPT = "the export is truncated or corrupt: re-export it"
T = TypeVar("T")


class FileConnector(Connector):
    """Reads one export file; the format comes from the extension.

    - ``.parquet``: an id column (``?id=``, default ``id``), a vector column (``?vector=``; a fixed-size or
      variable list of floats, auto-detected when there is one), every other column is payload. Cursor: row.
    - ``.jsonl``: one JSON object per line with ``id`` and ``vector`` keys (renamed by ``?id=``/``?vector=``);
      the other keys are payload. Cursor: byte offset of the next line.
    - ``.npz``: a ``vectors`` array (n, d) (``?vector=`` renames it), an optional ``ids`` array (else row
      numbers) and any other 1-D array of length n as a payload field. Object (pickled) arrays are refused.
      Cursor: row.

    Exports carry no metric: give it with ``?distance=`` (default cosine, marked as assumed). Exports are
    read-only: quarantine is refused (quarantine the points in the live store the export came from).

    A glob (``file:///exports/part-*.parquet``) reads every matching file of the one format, in sorted name order,
    as one collection (cursor ``[file index, cursor in that file]``). Read partitions: Parquet row groups (merged
    to about the target size; a very large row group is cut into row ranges), one per JSONL / NPZ file.
    """

    schemes = ("file",)
    capabilities = frozenset[str]()

    def _unsupported(self, what: str) -> Any:
        raise ConnectorError(f"{self.where} is a read-only export: it does not support {what}",
                             hint="quarantine the points in the live store the export was taken from")

    def __init__(
        self, uri: SourceURI, *, collection: str | None = None, vector: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(uri, collection=collection, vector=vector or uri.query.get("vector"), options=options)
        self.path = Path(uri.path)
        self.format = self.path.suffix.lower()
        self.id_column: str | None = uri.query.get("id")
        self._info: CollectionInfo | None = None
        #: The files of a glob URI, one connector each (None: a single file); listed by ``describe``.
        self.members: list[FileConnector] | None = None
        self.pattern = any(c in uri.path for c in "*?[")

    @property
    def where(self) -> str:
        return f"export {str(self.path)!r}"

    def _backend(self, operation: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call_backend`` for a file: a file that cannot be decoded is named, with the fix."""
        try:
            return call_backend(operation, self.where, fn, *args, **kwargs)
        except ConnectorError as e:
            if e.hint or isinstance(e, StoreNotFoundError):
                raise
            raise ConnectorError(str(e), hint=_CORRUPT) from e

    def describe(self) -> CollectionInfo:
        if self._info is not None:
            return self._info
        if self.format not in _FORMATS:
            raise ConfigError(f"cannot read {self.where}: unknown format {self.format or '(no extension)'!r}",
                              hint=f"supported: {', '.join(_FORMATS)}")
        declared = distance_option(self.uri, self.options)
        extra: dict[str, Any] = {}
        if self.pattern:
            dim, count, schema = self._describe_members()
            extra["files"] = len(self.members or ())
        elif not self.path.is_file():
            raise StoreNotFoundError(f"no export file at {self.path}")
        else:
            dim, count, schema = {".parquet": self._describe_parquet, ".jsonl": self._describe_jsonl,
                                  ".npz": self._describe_npz}[self.format]()
        name = self.collection or (self.path.parent.name if self.pattern else self.path.stem)
        self._info = CollectionInfo(
            name=name, dim=dim, distance=declared or Distance.COSINE, count=count,
            vector_name=self.vector, payload_schema=schema,
            extra={"format": self.format.lstrip("."), "id_column": self.id_column,
                   "distance_source": "declared" if declared else "assumed", **extra},
        )
        return self._info

    def _describe_members(self) -> tuple[int, int, dict[str, str]]:
        """A glob: every matching file described; the dimension held by most points, counts summed, payload
        fields united (a file of another dimension is read, and its points flagged as of the wrong dimension)."""
        paths = sorted(Path(p) for p in globbing.glob(str(self.path)) if Path(p).is_file())
        if not paths:
            raise StoreNotFoundError(f"no export file matches {str(self.path)!r}")
        self.members = [
            FileConnector(SourceURI(raw=f"file://{p}", scheme="file", host=None, port=None, path=str(p),
                                    query=dict(self.uri.query)),
                          collection=self.collection, vector=self.vector, options=self.options)
            for p in paths
        ]
        infos = [m.describe() for m in self.members]
        dims: Counter[int] = Counter()
        schema: dict[str, str] = {}
        for info in infos:
            dims[info.dim] += info.count
            schema.update(info.payload_schema)
        self.vector, self.id_column = self.members[0].vector, self.members[0].id_column
        return majority_length(dims), sum(i.count for i in infos), schema

    def iter_batches(self, *, batch_size: int = 512, start: Cursor = None) -> Iterator[tuple[PointBatch, Cursor]]:
        self.describe()
        if self.members is not None:
            return self._pages_members(batch_size, start)
        reader = {".parquet": self._pages_parquet, ".jsonl": self._pages_jsonl, ".npz": self._pages_npz}[self.format]
        return reader(batch_size, start)

    def _pages_members(self, batch_size: int, start: Cursor) -> Iterator[tuple[PointBatch, Cursor]]:
        members = self.members or []
        first, inner = (int(start[0]), start[1]) if start else (0, None)
        for i in range(first, len(members)):
            for page, cursor in members[i].iter_batches(batch_size=batch_size, start=inner if i == first else None):
                last = i + 1 == len(members)
                yield page, ([i, cursor] if cursor is not None else None if last else [i + 1, None])

    # -- partitions -----------------------------------------------------------------------------------
    def partitions(self, *, target_points: int = DEFAULT_TARGET_POINTS) -> PartitionPlan:
        """Parquet: row groups merged to about ``target_points`` rows (a row group of more than twice that is cut
        into row ranges, each reader decoding only up to its range's end); JSONL and NPZ: one per file."""
        self.describe()
        members = self.members if self.members is not None else [self]
        parts: list[Partition] = []
        for i, member in enumerate(members):
            label = member.path.name
            if member.format == ".parquet":
                for lo, hi in member._parquet_ranges(target_points):
                    parts.append(Partition(len(parts), f"rows {lo:,}-{max(lo, hi - 1):,} of {label}",
                                           {"file": i, "rows": [lo, hi]}, hi - lo))
            else:
                parts.append(Partition(len(parts), label, {"file": i}, member.describe().count))
        if len(parts) == 1 and self.format != ".parquet":
            return PartitionPlan(parts, split=False, reason=f"a {self.format} export is read as one partition per file")
        return PartitionPlan(parts)

    def iter_partition(
        self, partition: Partition, *, batch_size: int = 512, start: Cursor = None
    ) -> Iterator[tuple[PointBatch, Cursor]]:
        self.describe()
        members = self.members if self.members is not None else [self]
        member = members[int(partition.spec["file"])]
        if "rows" in partition.spec:
            lo, hi = (int(v) for v in partition.spec["rows"])
            return member._pages_parquet(batch_size, lo if start is None else start, stop=hi)
        return member.iter_batches(batch_size=batch_size, start=start)

    def _parquet_ranges(self, target: int) -> list[tuple[int, int]]:
        """``[lo, hi)`` row ranges following the row groups, of about ``target`` rows each."""
        meta = self._parquet().metadata
        ranges: list[tuple[int, int]] = []
        lo = row = 0
        for g in range(meta.num_row_groups):
            n = int(meta.row_group(g).num_rows)
            if n > 2 * target:
                if row > lo:
                    ranges.append((lo, row))
                ranges.extend((a, min(a + target, row + n)) for a in range(row, row + n, target))
                lo = row + n
            elif row + n - lo >= target:
                ranges.append((lo, row + n))
                lo = row + n
            row += n
        if row > lo or not ranges:
            ranges.append((lo, row))
        return ranges

    def fetch(self, ids: Sequence[PointId]) -> list[StoredPoint]:
        """Exports have no index: one streaming pass over the file collects the wanted points."""
        wanted = {_key(i) for i in ids}
        found: dict[str, StoredPoint] = {}
        for batch, _ in self.iter_batches(batch_size=4096):
            for pid, vec, payload in zip(batch.ids, batch.vectors, batch.payloads, strict=True):
                if _key(pid) in wanted:
                    found[_key(pid)] = StoredPoint(
                        id=pid, vectors={"": [] if vec is None else np.asarray(vec).tolist()}, payload=payload)
            if len(found) == len(wanted):
                break
        return [found[_key(i)] for i in ids if _key(i) in found]

    # -- parquet ------------------------------------------------------------------------------------
    def _parquet(self) -> Any:
        import pyarrow.parquet as pq

        # pre_buffer and threads read several row groups ahead (measured: 146 MB instead of 39 MB of growth on
        # 98 MB of vectors); memory stays bounded by one row group without them.
        return self._backend("open parquet", pq.ParquetFile, str(self.path), pre_buffer=False)

    def _describe_parquet(self) -> tuple[int, int, dict[str, str]]:
        pf = self._parquet()
        schema = pf.schema_arrow
        self.vector, self.id_column = pick_arrow_columns(schema, vector=self.vector, id_column=self.id_column,
                                                         where=self.where)
        dim = arrow_vector_dim(schema, self.vector)
        if dim is None:  # variable-length lists: the most common length (reads only that column's lengths)
            column = pf.iter_batches(batch_size=65_536, columns=[self.vector], use_threads=False)
            dim = majority_length(arrow_vector_lengths(guarded_iter(column, "read vector lengths", self.where)))
        payload = {f.name: str(f.type) for f in schema if f.name not in (self.vector, self.id_column)}
        return dim, int(pf.metadata.num_rows), payload

    def _pages_parquet(
        self, batch_size: int, start: Cursor, stop: int | None = None
    ) -> Iterator[tuple[PointBatch, Cursor]]:
        """Rows from ``start`` to ``stop`` (the end of the file when None); the cursor is None after the last."""
        pf = self._parquet()
        total = int(pf.metadata.num_rows) if stop is None else min(int(stop), int(pf.metadata.num_rows))
        row = int(start or 0)
        # Skip whole row groups before the cursor instead of decoding them.
        first_group, group_start = 0, 0
        while first_group < pf.num_row_groups and group_start + pf.metadata.row_group(first_group).num_rows <= row:
            group_start += pf.metadata.row_group(first_group).num_rows
            first_group += 1
        skip = row - group_start
        groups = []
        group_end = group_start
        for g in range(first_group, pf.num_row_groups):
            if group_end >= total:
                break
            groups.append(g)
            group_end += pf.metadata.row_group(g).num_rows
        if not groups or row >= total:
            return
        batches = pf.iter_batches(batch_size=batch_size, row_groups=groups, use_threads=False)
        for record_batch in guarded_iter(batches, "read parquet", self.where):
            if skip:
                cut = min(skip, record_batch.num_rows)
                record_batch, skip = record_batch.slice(cut), skip - cut
            if record_batch.num_rows > total - row:
                record_batch = record_batch.slice(0, total - row)
            if not record_batch.num_rows:
                continue
            ids, vectors, payloads = arrow_points(record_batch, vector=str(self.vector), id_column=str(self.id_column))
            row += len(ids)
            yield PointBatch(ids, vectors, payloads), (row if row < total else None)
            if row >= total:
                return

    # -- jsonl --------------------------------------------------------------------------------------
    def _describe_jsonl(self) -> tuple[int, int, dict[str, str]]:
        """Count the lines and take the dimension and payload keys from an evenly spaced sample of rows: the
        most common vector length is the collection's (a first row of another length must not decide it)."""
        self.id_column = self.id_column or "id"
        self.vector = self.vector or "vector"
        sample = _RowSample()
        with open(self.path, "rb") as fh:
            for index, (line, _end) in enumerate(_json_lines(fh, 0)):
                if sample.wants(index):
                    try:
                        row = _parse_json_line(line)
                    except (ValueError, RecursionError):
                        continue  # the reader reports it, with its position, when it gets there
                    if isinstance(row, dict):
                        sample.add(index, row, self.vector)
            count = sample.seen
        for key, label in ((self.id_column, "id"), (self.vector, "vector")):
            if sample.share_with(key) < 0.5:
                raise ConfigError(f"most rows of {self.where} have no {label} key {_short_key(key)!r}",
                                  hint=f"keys: {', '.join(sample.keys) or 'none'}; name the {label} key with "
                                       f"?{label}=KEY")
        keys = {k: t for k, t in sample.keys.items() if k not in (self.id_column, self.vector)}
        return sample.majority_dim(), count, keys

    def _json_row(self, line: bytes, end: int) -> dict[str, Any]:
        at = f"the line ending at byte {end} of {self.where}"
        try:
            row = _parse_json_line(line)
        except RecursionError as e:
            raise ConnectorError(f"{at} nests deeper than the JSON reader allows",
                                 hint="flatten that row's payload or remove the line") from e
        except ValueError as e:
            raise ConnectorError(f"{at} is not JSON: {first_line(e)}", hint=f"{_CORRUPT}, or remove that line") from e
        if not isinstance(row, dict):
            raise ConnectorError(f"{at} is not a JSON object", hint="each line must be one {...} object")
        if self.id_column not in row:
            raise ConfigError(f"{at} has no id key {self.id_column!r}",
                              hint=f"keys: {', '.join(map(_short_key, row))}; name the id key with ?id=KEY")
        return row

    def _pages_jsonl(self, batch_size: int, start: Cursor) -> Iterator[tuple[PointBatch, Cursor]]:
        with open(self.path, "rb") as fh:
            lines = _json_lines(fh, int(start or 0))
            pending = next(lines, None)
            end = 0
            while pending is not None:
                batch = PointBatch(ids=[], vectors=[], payloads=[])
                while pending is not None and len(batch) < batch_size:
                    line, end = pending
                    row = self._json_row(line, end)
                    batch.ids.append(row.pop(str(self.id_column)))
                    vec = row.pop(str(self.vector), None)  # a row without one is flagged (VA103), not fatal
                    batch.vectors.append(vec if isinstance(vec, list) else None)
                    batch.payloads.append(row)
                    pending = next(lines, None)
                yield batch, (end if pending is not None else None)

    # -- npz ----------------------------------------------------------------------------------------
    def _npz_members(self) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
        """Shape and dtype of every array in the archive, read from the .npy headers only."""
        out = {}
        with self._backend("open npz", zipfile.ZipFile, self.path) as archive:
            for name in archive.namelist():
                if name.endswith(".npy"):
                    with archive.open(name) as member:
                        shape, dtype, _ = _npy_header(member, self.where, name)
                    out[name.removesuffix(".npy")] = (shape, dtype)
        return out

    def _describe_npz(self) -> tuple[int, int, dict[str, str]]:
        members = self._npz_members()
        self.vector = self.vector or "vectors"
        if self.vector not in members or len(members[self.vector][0]) != 2:
            raise ConfigError(f"{self.where} has no 2-D array {self.vector!r}",
                              hint=f"arrays: {', '.join(members) or 'none'}; name it with ?vector=NAME")
        (count, dim), vdtype = members[self.vector]
        if vdtype.kind != "f":
            raise ConfigError(f"array {self.vector!r} of {self.where} holds {vdtype}, not floats")
        self.id_column = self.id_column or ("ids" if "ids" in members else None)
        fields = {}
        for name, (shape, dtype) in members.items():
            if name == self.vector or shape != (count,):
                continue
            if dtype.hasobject:
                raise ConfigError(f"array {name!r} of {self.where} holds Python objects",
                                  hint="pickled arrays are never loaded; save strings as a unicode array")
            fields[name] = str(dtype)
        if self.id_column is not None and self.id_column not in fields:
            raise ConfigError(f"{self.where} has no 1-D array {self.id_column!r} of {count} ids",
                              hint=f"arrays: {', '.join(members)}")
        self._npz_fields = [f for f in fields if f != self.id_column]
        return int(dim), int(count), {f: fields[f] for f in self._npz_fields}

    def _pages_npz(self, batch_size: int, start: Cursor) -> Iterator[tuple[PointBatch, Cursor]]:
        info = self._info
        total = info.count if info is not None else self._describe_npz()[1]
        row = int(start or 0)
        names = [str(self.vector), *([self.id_column] if self.id_column else []), *self._npz_fields]
        with self._backend("open npz", zipfile.ZipFile, self.path) as archive:
            streams = {name: self._backend(f"open array {name!r}", _NpyRows, archive.open(f"{name}.npy"), self.where,
                                           name, row) for name in names}
            try:
                while row < total:
                    n = min(batch_size, total - row)
                    columns = {name: self._backend(f"read array {name!r}", stream.read, n)
                               for name, stream in streams.items()}
                    ids = _npz_values(columns[self.id_column]) if self.id_column else list(range(row, row + n))
                    fields = [_npz_values(columns[f]) for f in self._npz_fields]
                    payloads = [dict(zip(self._npz_fields, values, strict=True))
                                for values in zip(*fields, strict=True)]
                    row += n
                    yield (PointBatch(ids, list(columns[str(self.vector)]), payloads or [{} for _ in range(n)]),
                           row if row < total else None)
            finally:
                for stream in streams.values():
                    stream.close()


class _NpyRows:
    """Reads rows of one .npy member of a zip archive sequentially.

    Hand-rolled because numpy has no streaming reader for .npz members (``np.load`` materialises each array,
    which breaks the bounded-memory promise for a 1M x 768 export); this uses numpy's own header parser.
    """

    def __init__(self, member: IO[bytes], where: str, name: str, first_row: int) -> None:
        shape, dtype, _ = _npy_header(member, where, name)
        self.where, self.name = where, name
        self.member = member
        self.dtype = dtype
        self.row_shape = shape[1:]
        self.row_bytes = int(dtype.itemsize * int(np.prod(self.row_shape, dtype=np.int64)))
        if first_row:
            member.seek(member.tell() + first_row * self.row_bytes)

    def read(self, rows: int) -> np.ndarray:
        data = self.member.read(rows * self.row_bytes)
        if len(data) != rows * self.row_bytes:
            raise ConnectorError(f"array {self.name!r} of {self.where} ended early", hint=_CORRUPT)
        return np.frombuffer(data, dtype=self.dtype).reshape((rows, *self.row_shape))

    def close(self) -> None:
        self.member.close()


def _npz_values(column: np.ndarray) -> list[Any]:
    """Python values of a 1-D array; byte strings (``S`` dtype) are text, decoded like a JSONL line (invalid
    UTF-8 kept as surrogate escapes for the boundary sanitiser to flag)."""
    values = column.tolist()
    if column.dtype.kind == "S":
        return [v.decode("utf-8", "surrogateescape") for v in values]
    return list(values)


def _npy_header(member: IO[bytes], where: str, name: str) -> tuple[tuple[int, ...], np.dtype[Any], bool]:
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(member)
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = read_header(member)
    except ValueError as e:
        raise ConnectorError(f"array {name!r} of {where} is not a valid .npy: {first_line(e)}") from e
    if fortran and len(shape) > 1:
        raise ConfigError(f"array {name!r} of {where} is Fortran-ordered", hint="save it with np.ascontiguousarray")
    return tuple(shape), np.dtype(dtype), fortran


def _json_lines(fh: IO[bytes], start: int) -> Iterator[tuple[bytes, int]]:
    """Non-blank lines from byte ``start`` on, each with the byte offset just after it (the resume cursor)."""
    fh.seek(start)
    position = start
    for line in fh:
        position += len(line)
        if line.strip():
            yield line, position


def _parse_json_line(line: bytes) -> Any:
    """One JSONL row. Invalid UTF-8 bytes do not fail the line: they are decoded with ``surrogateescape``
    (byte 0xff becomes U+DCFF), so the point is still read and the boundary sanitiser escapes and flags them
    (VA110). A leading byte-order mark is dropped."""
    text = line.decode("utf-8", "surrogateescape")
    return json.loads(text[1:] if text.startswith("\ufeff") else text)


class _RowSample:
    """Rows at evenly spaced line numbers of a file read once, in bounded memory: every ``stride``-th row is
    kept, and the stride doubles (dropping every other kept row) whenever more than ``limit`` are kept."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self.stride = 1
        self.seen = 0
        #: line number -> (vector length or -1 when the row has no list there, the row's keys)
        self._rows: dict[int, tuple[int, frozenset[str]]] = {}
        self.keys: dict[str, str] = {}

    def wants(self, index: int) -> bool:
        self.seen = index + 1
        return index % self.stride == 0

    def add(self, index: int, row: dict[str, Any], vector_key: str) -> None:
        vec = row.get(vector_key)
        self._rows[index] = (len(vec) if isinstance(vec, list) else -1, frozenset(row))
        for key, value in row.items():
            if len(self.keys) < 200:
                self.keys.setdefault(_short_key(key), type(value).__name__)
        if len(self._rows) > self.limit:
            self.stride *= 2
            for kept in [i for i in self._rows if i % self.stride]:
                del self._rows[kept]

    def share_with(self, key: str) -> float:
        """Fraction of the kept rows that carry ``key`` (1.0 when no row was kept)."""
        if not self._rows:
            return 1.0
        return sum(key in keys for _, keys in self._rows.values()) / len(self._rows)

    def majority_dim(self) -> int:
        """The most common vector length among the kept rows; 0 when none has one."""
        return majority_length(Counter(d for d, _ in self._rows.values() if d >= 0))


def _short_key(key: Any, limit: int = 60) -> str:
    """A payload key fit for a message: made safe (no lone surrogates) and bounded."""
    text, _ = safe_text(str(key))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _key(pid: Any) -> str:
    return str(pid)
