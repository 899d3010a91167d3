"""LanceDB connector: one table of a local LanceDB database (``lancedb:///path?table=T``), streamed as Arrow
record batches from a pinned table version."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from auditor.connector import Connector, Cursor, ProbeHit, SourceURI
from auditor.errors import ConfigError, StoreNotFoundError
from auditor.types import CollectionInfo, Distance, PointBatch, PointId, StoredPoint
from connectors.common import (
    arrow_points,
    arrow_vector_columns,
    arrow_vector_dim,
    call_backend,
    distance_option,
    parse_distance,
    pick_arrow_columns,
    resolve_name,
)


class LanceDBConnector(Connector):
    """Reads a LanceDB table. The cursor is ``{"version": V, "offset": N}``: a resumed scan reads the same
    table version it started on, so rows written since do not shift the offset.

    Query parameters: ``table``, ``vector`` (auto-detected when one float-list column exists), ``id``
    (default ``id``), ``distance`` (default: the metric of a vector index on the column, else LanceDB's default
    l2, marked as assumed).
    """

    schemes = ("lancedb",)
    capabilities = frozenset({"probe"})

    def __init__(
        self, uri: SourceURI, *, collection: str | None = None, vector: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(uri, collection=resolve_name(uri, collection, param="table", kind="table"),
                         vector=vector or uri.query.get("vector"), options=options)
        self.id_column: str | None = uri.query.get("id")
        self._table: Any = None
        self._info: CollectionInfo | None = None

    @property
    def where(self) -> str:
        return f"LanceDB table {self.collection!r} at {self.uri.redacted()}"

    def table(self) -> Any:
        if self._table is None:
            import lancedb

            path = Path(self.uri.path)
            # lancedb.connect creates a missing folder: check first, the audit must not create stores.
            if not path.is_dir():
                raise StoreNotFoundError(f"no LanceDB database at {path}", hint="give the folder lancedb.connect wrote")
            db = call_backend("open database", self.where, lancedb.connect, str(path))
            names = list(call_backend("list tables", self.where, db.list_tables).tables)
            if not self.collection:
                raise ConfigError("no table given", hint=f"add ?table=NAME; tables here: {', '.join(names) or 'none'}")
            if self.collection not in names:
                raise StoreNotFoundError(f"table {self.collection!r} not found in {self.uri.redacted()}",
                                         hint=f"tables here: {', '.join(names) or 'none'}")
            self._table = call_backend("open table", self.where, db.open_table, self.collection)
        return self._table

    def close(self) -> None:
        self._table = None

    # -- reading ------------------------------------------------------------------------------------
    def describe(self) -> CollectionInfo:
        if self._info is not None:
            return self._info
        table = self.table()
        schema = table.schema
        self.vector, self.id_column = pick_arrow_columns(schema, vector=self.vector, id_column=self.id_column,
                                                         where=self.where)
        indexed = None
        for index in call_backend("list indexes", self.where, table.list_indices):
            if self.vector in index.columns:
                indexed = parse_distance((index.index_details or {}).get("metric_type")) or indexed
        declared = distance_option(self.uri, self.options)
        dim = arrow_vector_dim(schema, self.vector)
        if dim is None:
            first = call_backend("read dimension", self.where,
                                 lambda: table.search().select([self.vector]).limit(1).to_arrow())
            dim = len(first.column(0)[0]) if first.num_rows else 0
        self._info = CollectionInfo(
            name=self.collection or "", dim=int(dim), distance=declared or indexed or Distance.EUCLID,
            count=int(call_backend("count", self.where, table.count_rows)), vector_name=self.vector,
            vector_names=tuple(arrow_vector_columns(schema)),
            payload_schema={f.name: str(f.type) for f in schema if f.name not in (self.vector, self.id_column)},
            extra={"version": int(table.version), "id_column": self.id_column,
                   "distance_source": "declared" if declared else "index" if indexed else "assumed"},
        )
        return self._info

    def iter_batches(self, *, batch_size: int = 512, start: Cursor = None) -> Iterator[tuple[PointBatch, Cursor]]:
        info = self.describe()
        table = self.table()
        version = int(start["version"]) if start else int(info.extra["version"])
        offset = int(start["offset"]) if start else 0
        if version != table.version:
            call_backend("check out version", self.where, table.checkout, version)
        total = int(call_backend("count", self.where, table.count_rows))
        columns = [self.id_column, self.vector, *info.payload_schema]
        # One offset/limit query per page: LanceDB's streaming reader (to_batches) buffers most of the table
        # (measured: ~125 MB for 98 MB of vectors), a bounded query per page keeps memory flat.
        while offset < total:
            query = table.search().select(columns).offset(offset).limit(batch_size)
            page = call_backend("read page", self.where, query.to_arrow)
            ids, vectors, payloads = arrow_points(page, vector=str(self.vector), id_column=str(self.id_column))
            if not ids:
                return
            offset += len(ids)
            yield PointBatch(ids, vectors, payloads), ({"version": version, "offset": offset}
                                                       if offset < total else None)

    def fetch(self, ids: Sequence[PointId]) -> list[StoredPoint]:
        self.describe()
        if not ids:
            return []
        literals = ", ".join(str(int(i)) if isinstance(i, int) else "'" + str(i).replace("'", "''") + "'"
                             for i in ids)
        table = call_backend("fetch", self.where, lambda: self.table().search()
                             .where(f"`{self.id_column}` IN ({literals})").limit(None).to_arrow())
        found_ids, vectors, payloads = arrow_points(table, vector=str(self.vector), id_column=str(self.id_column))
        return [StoredPoint(id=pid, vectors={"": [] if vec is None else np.asarray(vec).tolist()}, payload=payload)
                for pid, vec, payload in zip(found_ids, vectors, payloads, strict=True)]

    # -- isolation probes ---------------------------------------------------------------------------
    def probe_search(
        self, vector: np.ndarray, *, tenant_field: str, tenant: str, limit: int = 10,
        filter_spec: Mapping[str, Any] | None = None,
    ) -> list[ProbeHit]:
        """LanceDB's tenant idiom: ``search(q).where("tenant = 'x'", prefilter=True)``."""
        info = self.describe()
        clause = (str(filter_spec["where"]) if filter_spec
                  else f"`{tenant_field}` = '" + tenant.replace("'", "''") + "'")
        metric = {Distance.COSINE: "cosine", Distance.DOT: "dot", Distance.EUCLID: "l2"}.get(info.distance, "l2")
        result = call_backend(
            "probe search", self.where,
            lambda: self.table().search(np.asarray(vector, dtype=np.float32), vector_column_name=self.vector)
            .distance_type(metric).where(clause, prefilter=True).limit(limit).to_arrow(),
        )
        distances = result.column("_distance").to_pylist()
        ids, _, payloads = arrow_points(result.drop_columns(["_distance"]), vector=str(self.vector),
                                        id_column=str(self.id_column))
        # LanceDB returns distances (cosine and dot as 1 - similarity); report a similarity, higher = closer.
        return [ProbeHit(id=pid, score=-float(d) if metric == "l2" else 1.0 - float(d), payload=p)
                for pid, d, p in zip(ids, distances, payloads, strict=True)]

