"""Milvus connector: Milvus Lite files (``milvus:///path/file.db``) and Milvus servers (``milvus://host:19530``,
``milvus+https://...``), read in primary-key order with keyset pagination."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from auditor.connector import Connector, Cursor, ProbeHit, SourceURI
from auditor.errors import ConfigError, ConnectorError, StoreNotFoundError
from auditor.types import CollectionInfo, Distance, PointBatch, PointId, StoredPoint
from connectors.common import call_backend, parse_distance, refuse_password_in_uri, resolve_name

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
    """

    schemes = ("milvus", "milvus+https")
    capabilities = frozenset({"probe"})

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

    @property
    def where(self) -> str:
        return f"Milvus collection {self.collection!r} at {self.uri.redacted()}"

    @property
    def mode(self) -> str:
        return "lite" if self.uri.host is None else "server"

    def client(self) -> Any:
        if self._client is None:
            from pymilvus import MilvusClient

            refuse_password_in_uri(self.uri, "MILVUS_TOKEN")
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
        info = self.describe()
        # Each Milvus query costs about a scan of the segment whatever its limit (measured on Milvus Lite: 0.6 s
        # per 513-row query on 20k points), so fetch large windows and cut them into pages.
        window = min(max(batch_size, _READ_WINDOW), _MAX_QUERY_WINDOW - 1)
        last = start
        while True:
            expr = "" if last is None else f"{self._pk} > {self._key_literal(last)}"
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

    def fetch(self, ids: Sequence[PointId]) -> list[StoredPoint]:
        info = self.describe()
        if not ids:
            return []
        keys = [int(i) for i in ids] if self._pk_is_int else [str(i) for i in ids]
        rows = call_backend("fetch", self.where, self.client().get, info.name, ids=keys, output_fields=["*"])
        out = []
        for row in rows:
            payload = {k: v for k, v in row.items() if k != self._pk and k not in self._vector_fields}
            vectors = {name: np.asarray(row[name], dtype=np.float32).tolist() for name in self._vector_fields
                       if row.get(name) is not None}
            out.append(StoredPoint(id=row[self._pk], vectors=vectors, payload=payload))
        return out

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
