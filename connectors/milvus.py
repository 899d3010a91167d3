"""Milvus connector: Milvus Lite files (``milvus:///path/file.db``) and Milvus servers (``milvus://host:19530``,
``milvus+https://...``), read in primary-key order with keyset pagination."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auditor.connector import Connector, Cursor, ProbeHit, SourceURI
from auditor.errors import ConfigError, ConnectorError, StoreNotFoundError
from auditor.partitions import (
    DEFAULT_TARGET_POINTS,
    Partition,
    PartitionPlan,
    key_range_pages,
    key_range_plan,
    keyset_boundaries,
)
from auditor.types import CollectionInfo, Distance, PointBatch, PointId, StoredPoint
from connectors.common import call_backend, parse_distance, resolve_name


@dataclass(frozen=True)
class _Schema:
    pk: str
    pk_is_int: bool
    vectors: list[str]
    fields: list[str]
    dynamic: bool
    auto_id: bool
    raw: dict[str, Any]


# Milvus caps offset + limit of one query at 16384 rows.
_MAX_QUERY_WINDOW = 16_384
# Rows per query when reading (see iter_batches): large enough to amortise a query, small enough for memory.
_READ_WINDOW = 4096


class MilvusConnector(Connector):
    """Reads one Milvus collection in primary-key order; the cursor is the last primary key read, so a resumed
    scan filters ``pk > cursor``.

    Server credentials: ``MILVUS_TOKEN`` (``user:password`` or an API key); ``?db=`` picks a database. A
    collection that is not loaded is loaded for the scan and released again on ``close``. Only
    ``FLOAT_VECTOR`` fields are audited; ``--vector`` picks one when there are several.

    Quarantine: move (to a sibling collection with the same fields, dynamic fields on, an AUTOINDEX of the same
    metric) and tag (the flag is a dynamic field, so the collection needs ``enable_dynamic_field``). Writes are
    full-row upserts of the vectors as read: Milvus keeps float vectors bit-exact, cosine included.
    """

    schemes = ("milvus", "milvus+https")
    credentials_env = "MILVUS_TOKEN"
    capabilities = frozenset({"probe", "quarantine:tag", "quarantine:move"})

    def __init__(
        self, uri: SourceURI, *, collection: str | None = None, vector: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(uri, collection=resolve_name(uri, collection, param="collection", kind="collection"),
                         vector=vector, options=options)
        self._client: Any = None
        self._info: CollectionInfo | None = None
        self._loaded_by_us = False
        self._pk = ""
        self._pk_is_int = True
        self._vector_fields: list[str] = []
        self._schemas: dict[str, _Schema] = {}

    @property
    def where(self) -> str:
        return f"Milvus collection {self.collection!r} at {self.uri.redacted()}"

    @property
    def mode(self) -> str:
        return "lite" if self.uri.host is None else "server"

    def client(self) -> Any:
        if self._client is None:
            from pymilvus import MilvusClient
            if self.mode == "lite":
                path = Path(self.uri.path)
                # MilvusClient would create an empty database at a mistyped path (Milvus Lite 3 writes a folder).
                if not path.exists():
                    raise StoreNotFoundError(f"no Milvus Lite file at {path}",
                                             hint="give the .db path MilvusClient(uri=...) wrote")
                target, token = str(path), ""
            else:
                proto = "https" if self.uri.scheme == "milvus+https" else "http"
                target = f"{proto}://{self.uri.host}:{self.uri.port or 19530}"
                token = os.environ.get("MILVUS_TOKEN", "")
            attempts = 3 if self.mode == "lite" else 1
            for attempt in range(attempts):
                try:
                    self._client = call_backend(
                        "connect", self.where, MilvusClient, uri=target, token=token,
                        db_name=self.uri.query.get("db", ""), timeout=float(self.options.get("timeout", 10)),
                    )
                    break
                except ConnectorError as e:
                    # A Milvus Lite file stays locked for a moment after another client closed it.
                    if attempt < attempts - 1:
                        time.sleep(1.0 + attempt)
                        continue
                    if self.mode == "lite":
                        e.hint = "Milvus Lite allows one process per file: stop the application holding it"
                    raise
        return self._client

    def close(self) -> None:
        if self._client is None:
            return
        try:
            if self._loaded_by_us:
                self._client.release_collection(self.collection)
            self._client.close()
        finally:
            self._client = None
            self._loaded_by_us = False

    # -- reading ------------------------------------------------------------------------------------
    def describe(self) -> CollectionInfo:
        if self._info is not None:
            return self._info
        from pymilvus import DataType

        client = self.client()
        names = call_backend("list collections", self.where, client.list_collections)
        if not self.collection:
            raise ConfigError("no collection given", hint=f"add --collection NAME; this store has: "
                                                          f"{', '.join(names) or 'none'}")
        if self.collection not in names:
            raise StoreNotFoundError(f"collection {self.collection!r} not found in {self.uri.redacted()}",
                                     hint=f"collections here: {', '.join(names) or 'none'}")
        desc = call_backend("describe", self.where, client.describe_collection, self.collection)
        fields = {f["name"]: f for f in desc["fields"]}
        self._pk = next(name for name, f in fields.items() if f.get("is_primary"))
        self._pk_is_int = fields[self._pk]["type"] == DataType.INT64
        self._vector_fields = [n for n, f in fields.items() if f["type"] == DataType.FLOAT_VECTOR]
        if self.vector:
            if self.vector not in fields:
                raise ConfigError(f"no field {self.vector!r} in {self.where}", hint=f"fields: {', '.join(fields)}")
            if self.vector not in self._vector_fields:
                raise ConfigError(f"field {self.vector!r} of {self.where} is {fields[self.vector]['type'].name}, "
                                  "not FLOAT_VECTOR", hint=f"float vector fields: {', '.join(self._vector_fields)}")
        elif len(self._vector_fields) == 1:
            self.vector = self._vector_fields[0]
        else:
            raise ConfigError(f"{self.where} has {len(self._vector_fields)} FLOAT_VECTOR fields",
                              hint=f"choose one with --vector ({', '.join(self._vector_fields) or 'none here'})")
        state = call_backend("read load state", self.where, client.get_load_state, self.collection)
        if getattr(state.get("state"), "name", str(state.get("state"))) != "Loaded":
            call_backend("load collection", self.where, client.load_collection, self.collection)
            self._loaded_by_us = True
        metric = None
        for index_name in call_backend("list indexes", self.where, client.list_indexes, self.collection,
                                       field_name=self.vector):
            index = call_backend("describe index", self.where, client.describe_index, self.collection, index_name)
            metric = index.get("metric_type") or metric
        counted = call_backend("count", self.where, client.query, self.collection, filter="",
                               output_fields=["count(*)"])
        self._info = CollectionInfo(
            name=self.collection, dim=int(fields[self.vector]["params"]["dim"]),
            distance=parse_distance(metric) or Distance.COSINE, count=int(counted[0]["count(*)"]),
            vector_name=self.vector, vector_names=tuple(self._vector_fields),
            payload_schema={n: f["type"].name for n, f in fields.items() if n != self._pk
                            and n not in self._vector_fields},
            extra={"mode": self.mode, "metric": metric, "primary_key": self._pk,
                   "dynamic_fields": bool(desc.get("enable_dynamic_field")), "loaded_by_audit": self._loaded_by_us},
        )
        return self._info

    def _point(self, row: Mapping[str, Any]) -> tuple[PointId, Any, dict[str, Any]]:
        payload = {k: v for k, v in row.items() if k != self._pk and k not in self._vector_fields}
        vec = row.get(self.vector or "")
        return row[self._pk], (None if vec is None else np.asarray(vec, dtype=np.float32)), payload

    def _key_literal(self, value: PointId) -> str:
        # JSON quoting is also valid Milvus expression quoting for strings (double quotes, backslash escapes).
        return str(int(value)) if self._pk_is_int else json.dumps(str(value))

    def iter_batches(self, *, batch_size: int = 512, start: Cursor = None) -> Iterator[tuple[PointBatch, Cursor]]:
        """Keyset pages ``pk > last ORDER BY pk``. pymilvus' own query_iterator is not used: it builds its next
        expression with unescaped string keys, which breaks on a key holding a double quote."""
        return self._keyset_pages(batch_size, start)

    def _keyset_expr(self, last: Any, upto: Any) -> str:
        terms = [f"{self._pk} {op} {self._key_literal(v)}" for op, v in ((">", last), ("<=", upto)) if v is not None]
        return " and ".join(terms)

    def _keyset_pages(self, batch_size: int, start: Cursor, upto: Any = None) -> Iterator[tuple[PointBatch, Cursor]]:
        info = self.describe()
        # Each Milvus query costs about a scan of the segment whatever its limit (measured on Milvus Lite: 0.6 s
        # per 513-row query on 20k points), so fetch large windows and cut them into pages.
        window = min(max(batch_size, _READ_WINDOW), _MAX_QUERY_WINDOW - 1)
        last = start
        while True:
            expr = self._keyset_expr(last, upto)
            # iterator=True makes Milvus return the rows sorted by primary key (what its iterators rely on);
            # one row more than the window tells whether more follow (the cursor is None on the last page).
            rows = call_backend("read page", self.where, self.client().query, info.name, filter=expr, limit=window + 1,
                                output_fields=["*"], iterator="True", reduce_stop_for_best="True")
            more = len(rows) > window
            rows = rows[:window]
            for lo in range(0, len(rows), batch_size):
                batch = PointBatch(ids=[], vectors=[], payloads=[])
                for row in rows[lo:lo + batch_size]:
                    pid, vec, payload = self._point(row)
                    batch.ids.append(pid)
                    batch.vectors.append(vec)
                    batch.payloads.append(payload)
                last = batch.ids[-1]
                final = not more and lo + batch_size >= len(rows)
                yield batch, (None if final else last)
            if not more:
                return

    # -- partitions -----------------------------------------------------------------------------------
    def partitions(self, *, target_points: int = DEFAULT_TARGET_POINTS) -> PartitionPlan:
        """Primary-key ranges ``(after, upto]`` from a primary-key-only keyset listing. Milvus Lite keeps its
        database file open in one process, so its partitions are read one at a time (``exclusive``)."""
        info = self.describe()

        def keys(after: Any, n: int) -> list[Any]:
            rows = call_backend("list ids", self.where, self.client().query, info.name,
                                filter=self._keyset_expr(after, None), limit=n, output_fields=[self._pk],
                                iterator="True", reduce_stop_for_best="True")
            return [row[self._pk] for row in rows]

        plan = key_range_plan(keyset_boundaries(keys, target_points, window=_MAX_QUERY_WINDOW - 1), self._pk)
        return dataclasses.replace(plan, exclusive=self.mode == "lite")

    def iter_partition(
        self, partition: Partition, *, batch_size: int = 512, start: Cursor = None
    ) -> Iterator[tuple[PointBatch, Cursor]]:
        return key_range_pages(partition, start, lambda: self.iter_batches(batch_size=batch_size, start=start),
                               lambda after, upto: self._keyset_pages(batch_size, after, upto))

    def fetch(self, ids: Sequence[PointId]) -> list[StoredPoint]:
        return self.fetch_points(ids)

    # -- writing (quarantine) ------------------------------------------------------------------------
    def _schema(self, name: str) -> _Schema:
        """Primary key, vector fields and dynamic-field flag of collection ``name`` (read once)."""
        if name not in self._schemas:
            from pymilvus import DataType

            desc = call_backend("describe", f"Milvus collection {name!r}", self.client().describe_collection, name)
            fields = desc["fields"]
            pk = next(f for f in fields if f.get("is_primary"))
            self._schemas[name] = _Schema(
                pk=pk["name"], pk_is_int=pk["type"] == DataType.INT64,
                vectors=[f["name"] for f in fields if f["type"] == DataType.FLOAT_VECTOR],
                fields=[f["name"] for f in fields], dynamic=bool(desc.get("enable_dynamic_field")),
                auto_id=bool(desc.get("auto_id")), raw=desc,
            )
        return self._schemas[name]

    def _target(self, collection: str | None) -> tuple[str, _Schema]:
        name = collection or self.describe().name
        return name, self._schema(name)

    def _rows(self, ids: Sequence[PointId], name: str, schema: _Schema) -> list[dict[str, Any]]:
        keys = [int(i) for i in ids] if schema.pk_is_int else [str(i) for i in ids]
        return list(call_backend("fetch", self.where, self.client().get, name, ids=keys, output_fields=["*"]))

    def fetch_points(self, ids: Sequence[PointId], *, collection: str | None = None) -> list[StoredPoint]:
        if not ids:
            return []
        name, schema = self._target(collection)
        out = []
        for row in self._rows(ids, name, schema):
            payload = {k: v for k, v in row.items() if k != schema.pk and k not in schema.vectors}
            vectors = {field: np.asarray(row[field], dtype=np.float32).tolist() for field in schema.vectors
                       if row.get(field) is not None}
            out.append(StoredPoint(id=row[schema.pk], vectors=vectors, payload=payload))
        return out

    def _check_writable(self, name: str, schema: _Schema, keys: Sequence[str]) -> None:
        if schema.auto_id:
            raise ConnectorError(
                f"Milvus collection {name!r} generates its primary keys (auto_id): a rewritten point would get a new "
                "id, so vecaudit does not write to it", hint="quarantine is unavailable for auto_id collections",
            )
        unknown = [k for k in keys if k not in schema.fields]
        if unknown and not schema.dynamic:
            raise ConnectorError(
                f"cannot write payload key(s) {', '.join(unknown)} to Milvus collection {name!r}: it has no dynamic "
                "field", hint="tag mode needs enable_dynamic_field=True; use --mode move for this collection",
            )

    def _upsert(self, name: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            call_backend("upsert", f"Milvus collection {name!r}", self.client().upsert, name, rows)

    def _replace(self, name: str, schema: _Schema, rows: list[dict[str, Any]]) -> None:
        """Delete, then insert: an upsert keeps dynamic keys the new row lacks (measured on Milvus Lite), so it
        cannot remove a flag. Re-running after a crash in between inserts the row again."""
        if rows:
            self.delete_points([row[schema.pk] for row in rows], collection=name)
            call_backend("insert", f"Milvus collection {name!r}", self.client().insert, name, rows)

    def set_payload(self, ids: Sequence[PointId], payload: Mapping[str, Any], *, collection: str | None = None) -> None:
        # Full-row upserts of the rows as read (partial_update needs Milvus 2.6); vectors come back bit-exact.
        name, schema = self._target(collection)
        self._check_writable(name, schema, list(payload))
        self._upsert(name, [{**row, **payload} for row in self._rows(ids, name, schema)])

    def overwrite_payload(
        self, ids: Sequence[PointId], payload: Mapping[str, Any], *, collection: str | None = None
    ) -> None:
        name, schema = self._target(collection)
        self._check_writable(name, schema, list(payload))
        keep = {schema.pk, *schema.vectors}
        self._replace(name, schema, [{**{k: v for k, v in row.items() if k in keep}, **payload}
                                     for row in self._rows(ids, name, schema)])

    def upsert_points(self, points: Sequence[StoredPoint], *, collection: str | None = None) -> None:
        name, schema = self._target(collection)
        rows = []
        for point in points:
            self._check_writable(name, schema, list(point.payload))
            vectors = dict(point.vectors)
            if "" in vectors and len(schema.vectors) == 1:  # a backup taken through another connector
                vectors = {schema.vectors[0]: vectors.pop("")}
            missing = set(schema.vectors) - set(vectors)
            if missing:
                raise ConnectorError(f"point {point.id} lacks vector field(s) {', '.join(sorted(missing))} of "
                                     f"Milvus collection {name!r}")
            pid = int(point.id) if schema.pk_is_int else str(point.id)
            rows.append({schema.pk: pid, **{k: vectors[k] for k in schema.vectors}, **point.payload})
        self._replace(name, schema, rows)

    def delete_points(self, ids: Sequence[PointId], *, collection: str | None = None) -> None:
        if not ids:
            return
        name, schema = self._target(collection)
        keys = [int(i) for i in ids] if schema.pk_is_int else [str(i) for i in ids]
        call_backend("delete", f"Milvus collection {name!r}", self.client().delete, name, ids=keys)

    def collection_exists(self, name: str) -> bool:
        return bool(call_backend("check collection", self.where, self.client().has_collection, name))

    def ensure_collection_like(self, name: str) -> None:
        """Same fields as the audited collection (ids kept: no auto_id), dynamic fields on (the flag of a moved
        point), one AUTOINDEX per vector field with the source's metric (the quarantine is not searched)."""
        source = self._schema(self.describe().name)
        self._check_writable(self.describe().name, source, [])
        if self.collection_exists(name):
            return
        client = self.client()
        schema = client.create_schema(auto_id=False, enable_dynamic_field=True,
                                      description=f"vecaudit quarantine of {self.collection}")
        for field in source.raw["fields"]:
            extra = {k: field[k] for k in ("nullable", "default_value", "element_type") if k in field}
            schema.add_field(field["name"], field["type"], is_primary=bool(field.get("is_primary")),
                             **dict(field.get("params") or {}), **extra)
        index = client.prepare_index_params()
        for vector in source.vectors:
            metric = "COSINE"
            for index_name in call_backend("list indexes", self.where, client.list_indexes, self.collection,
                                           field_name=vector):
                described = call_backend("describe index", self.where, client.describe_index, self.collection,
                                         index_name)
                metric = described.get("metric_type") or metric
            index.add_index(vector, index_type="AUTOINDEX", metric_type=metric)
        call_backend("create collection", f"Milvus collection {name!r}", client.create_collection, name,
                     schema=schema, index_params=index)

    # -- isolation probes ---------------------------------------------------------------------------
    def probe_search(
        self, vector: np.ndarray, *, tenant_field: str, tenant: str, limit: int = 10,
        filter_spec: Mapping[str, Any] | None = None,
    ) -> list[ProbeHit]:
        """Milvus' tenant idiom: a boolean ``filter`` expression ``tenant_field == "tenant"`` (or a partition
        key field); ``filter_spec={"expr": ...}`` passes a full expression."""
        info = self.describe()
        expr = str(filter_spec["expr"]) if filter_spec else f"{tenant_field} == {json.dumps(tenant)}"
        result = call_backend(
            "probe search", self.where, self.client().search, info.name,
            data=[np.asarray(vector, dtype=np.float32).tolist()], anns_field=self.vector, filter=expr, limit=limit,
            output_fields=["*"],
        )
        hits = []
        for hit in result[0]:
            entity = dict(hit.get("entity") or {})
            payload = {k: v for k, v in entity.items() if k != self._pk and k not in self._vector_fields}
            # Milvus reports L2 as a squared distance (smaller = closer) and COSINE/IP as similarities.
            score = -float(hit["distance"]) if info.distance is Distance.EUCLID else float(hit["distance"])
            hits.append(ProbeHit(id=hit.get("id", entity.get(self._pk)), score=score, payload=payload))
        return hits
