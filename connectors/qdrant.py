"""Qdrant connector: server (``qdrant://``, ``qdrants://``, REST or gRPC) and local mode (``qdrant+local://``,
``:memory:``) through one qdrant-client code path."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from auditor.connector import Connector, Cursor, ProbeHit, SourceURI
from auditor.errors import ConfigError, ConnectorError, StoreNotFoundError
from auditor.partitions import DEFAULT_TARGET_POINTS, Partition, PartitionPlan, is_whole, take_until, whole
from auditor.types import CollectionInfo, Distance, PointBatch, PointId, StoredPoint

_DISTANCES = {
    "Cosine": Distance.COSINE,
    "Dot": Distance.DOT,
    "Euclid": Distance.EUCLID,
    "Manhattan": Distance.MANHATTAN,
}


class QdrantConnector(Connector):
    """Reads a Qdrant collection with ``scroll`` (vectors + payload), resumable from the page offset.

    URI forms: ``qdrant+local:///abs/path`` (local mode on disk), ``:memory:`` or ``qdrant+memory://``
    (in-process, tests), ``qdrant://host:6333`` and ``qdrants://host:6333`` (server over HTTP/HTTPS;
    API key from ``QDRANT_API_KEY``; option ``grpc=True`` prefers gRPC on port 6334).
    """

    schemes = ("qdrant", "qdrants", "qdrant+local", "qdrant+memory")
    credentials_env = "QDRANT_API_KEY"
    capabilities = frozenset({"probe", "quarantine:tag", "quarantine:move"})

    def __init__(
        self,
        uri: SourceURI,
        *,
        collection: str | None = None,
        vector: str | None = None,
        options: Mapping[str, Any] | None = None,
        client: Any = None,
    ) -> None:
        super().__init__(uri, collection=collection, vector=vector, options=options)
        self._client = client
        self._owns_client = client is None
        self._info: CollectionInfo | None = None

    # -- connection ---------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"collection {self.collection!r} at {self.uri.redacted()}"

    def client(self) -> Any:
        """The qdrant-client instance, created on first use (the constructor does no I/O)."""
        if self._client is None:
            from qdrant_client import QdrantClient

            scheme = self.uri.scheme
            try:
                if scheme == "qdrant+memory" or self.uri.path == ":memory:":
                    self._client = QdrantClient(location=":memory:")
                elif scheme == "qdrant+local":
                    path = Path(self.uri.path)
                    if not (path / "collection").is_dir() and not (path / "meta.json").is_file():
                        raise StoreNotFoundError(
                            f"no Qdrant local store at {path}",
                            hint="give the folder a QdrantClient(path=...) wrote, e.g. qdrant+local:///data/store",
                        )
                    self._client = QdrantClient(path=str(path))
                else:
                    https = scheme == "qdrants"
                    host = self.uri.host or "localhost"
                    port = self.uri.port or 6333
                    self._client = QdrantClient(
                        host=host,
                        port=port,
                        https=https,
                        api_key=os.environ.get("QDRANT_API_KEY") or None,
                        prefer_grpc=bool(self.options.get("grpc")),
                        grpc_port=int(self.options.get("grpc_port", 6334)),
                        timeout=int(self.options.get("timeout", 30)),
                    )
            except (StoreNotFoundError, ConfigError):
                raise
            except Exception as e:
                raise ConnectorError(f"cannot open Qdrant store {self.uri.redacted()}: {e}") from e
        return self._client

    def close(self) -> None:
        if self._client is not None and self._owns_client:
            try:
                self._client.close()
            finally:
                self._client = None

    def _call(self, operation: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a client call, turning backend errors into one clear ConnectorError."""
        try:
            return fn(*args, **kwargs)
        except (ConnectorError, ConfigError):
            raise
        except Exception as e:
            text = str(e)
            if "not found" in text.lower() or "doesn't exist" in text.lower():
                raise StoreNotFoundError(
                    f"{operation}: {self.where} does not exist", hint="check --collection (`vecaudit describe`)"
                ) from e
            if "forbidden" in text.lower() or "403" in text or "unauthorized" in text.lower():
                raise ConnectorError(
                    f"{operation} refused on {self.where}: {text.splitlines()[0][:200]}",
                    hint="the API key in QDRANT_API_KEY lacks permission for this operation",
                ) from e
            raise ConnectorError(f"{operation} failed on {self.where}: {type(e).__name__}: {text[:300]}") from e

    # -- reading ------------------------------------------------------------------------------------
    def _require_collection(self) -> str:
        if not self.collection:
            names = [c.name for c in self._call("list collections", self.client().get_collections).collections]
            raise ConfigError(
                "no collection given", hint=f"add --collection NAME; this store has: {', '.join(names) or 'none'}"
            )
        return self.collection

    def describe(self) -> CollectionInfo:
        if self._info is not None:
            return self._info
        name = self._require_collection()
        client = self.client()
        exists = self._call("check collection", client.collection_exists, name)
        if not exists:
            existing = [c.name for c in self._call("list collections", client.get_collections).collections]
            raise StoreNotFoundError(
                f"collection {name!r} not found in {self.uri.redacted()}",
                hint=f"collections here: {', '.join(existing) or 'none'}",
            )
        raw = self._call("describe", client.get_collection, name)
        vectors_cfg = raw.config.params.vectors
        if isinstance(vectors_cfg, Mapping):
            names: tuple[str, ...] = tuple(vectors_cfg)
            if not names:
                raise ConnectorError(f"{self.where} has no dense vectors to audit")
            if self.vector is None:
                if len(names) > 1:
                    raise ConfigError(
                        f"{self.where} has several named vectors", hint=f"choose one with --vector ({', '.join(names)})"
                    )
                self.vector = names[0]
            if self.vector not in vectors_cfg:
                raise ConfigError(f"no vector named {self.vector!r} in {self.where}", hint=f"names: {', '.join(names)}")
            params = vectors_cfg[self.vector]
        else:
            names = ()
            if self.vector not in (None, ""):
                raise ConfigError(f"{self.where} has one unnamed vector; drop --vector {self.vector}")
            params = vectors_cfg
        distance = _DISTANCES.get(getattr(params.distance, "value", str(params.distance)), Distance.COSINE)
        schema = {k: getattr(v.data_type, "value", str(v.data_type)) for k, v in (raw.payload_schema or {}).items()}
        indexes: dict[str, dict[str, Any]] = {}
        for k, v in (raw.payload_schema or {}).items():
            fparams = getattr(v, "params", None)
            indexes[k] = {
                "type": getattr(v.data_type, "value", str(v.data_type)),
                "is_tenant": bool(getattr(fparams, "is_tenant", False)) if fparams is not None else False,
            }
        count = raw.points_count
        if count is None:
            count = self._call("count", client.count, name, exact=True).count
        self._info = CollectionInfo(
            name=name,
            dim=int(params.size),
            distance=distance,
            count=int(count or 0),
            vector_name=self.vector or None,
            vector_names=names,
            payload_schema=schema,
            payload_indexes=indexes,
            extra={"mode": self.mode},
        )
        return self._info

    @property
    def mode(self) -> str:
        return "server" if self.uri.scheme in ("qdrant", "qdrants") else "local"

    def _vector_of(self, record: Any) -> Any:
        vec = record.vector
        if isinstance(vec, Mapping):
            return vec.get(self.vector or "")
        return vec

    def iter_batches(self, *, batch_size: int = 512, start: Cursor = None) -> Iterator[tuple[PointBatch, Cursor]]:
        info = self.describe()
        with_vectors: Any = [self.vector] if info.vector_name else True
        offset = start
        while True:
            records, next_offset = self._call(
                "scroll",
                self.client().scroll,
                collection_name=info.name,
                limit=batch_size,
                offset=offset,
                with_payload=True,
                with_vectors=with_vectors,
            )
            if records:
                batch = PointBatch(
                    ids=[r.id for r in records],
                    vectors=[self._vector_of(r) for r in records],
                    payloads=[dict(r.payload or {}) for r in records],
                )
                yield batch, next_offset
            if next_offset is None:
                return
            offset = next_offset

    # -- partitions -----------------------------------------------------------------------------------
    def partitions(self, *, target_points: int = DEFAULT_TARGET_POINTS) -> PartitionPlan:
        """Id ranges in scroll order: one id-only scroll call per partition (``limit=target_points``, no payload,
        no vectors) returns the first id of the next range. Local mode locks its folder, so its partitions are
        read one at a time (``exclusive``); an in-memory store cannot be opened by another process."""
        info = self.describe()
        if self.uri.scheme == "qdrant+memory" or self.uri.path == ":memory:":
            return whole("an in-memory Qdrant store lives in this process only", points=info.count, remote=False)
        starts: list[Any] = [None]
        while True:
            _, next_offset = self._call("list ids", self.client().scroll, collection_name=info.name,
                                        limit=max(1, int(target_points)), offset=starts[-1], with_payload=False,
                                        with_vectors=False)
            if next_offset is None:
                break
            starts.append(next_offset)
        parts = [
            Partition(i, f"ids from {lo if lo is not None else 'the first'} up to "
                         f"{'before ' + str(hi) if hi is not None else 'the last'}",
                      {"from": lo, "to": hi})
            for i, (lo, hi) in enumerate(zip(starts, [*starts[1:], None], strict=True))
        ]
        return PartitionPlan(parts, exclusive=self.mode == "local")

    def iter_partition(
        self, partition: Partition, *, batch_size: int = 512, start: Cursor = None
    ) -> Iterator[tuple[PointBatch, Cursor]]:
        if is_whole(partition):
            return self.iter_batches(batch_size=batch_size, start=start)
        lo, hi = partition.spec.get("from"), partition.spec.get("to")
        pages = self.iter_batches(batch_size=batch_size, start=lo if start is None else start)
        if hi is None:
            return pages
        stop = _id_order(hi)

        def inside(page: PointBatch) -> tuple[PointBatch, bool]:
            keep = next((i for i, pid in enumerate(page.ids) if _id_order(pid) >= stop), len(page))
            if keep == len(page):
                return page, False
            return PointBatch(page.ids[:keep], page.vectors[:keep], page.payloads[:keep]), True

        return take_until(pages, inside)

    def fetch(self, ids: Sequence[PointId]) -> list[StoredPoint]:
        return self.fetch_points(ids, collection=self.describe().name)

    # -- writing (quarantine) ------------------------------------------------------------------------
    def _target(self, collection: str | None) -> str:
        return collection or self._require_collection()

    def fetch_points(self, ids: Sequence[PointId], *, collection: str | None = None) -> list[StoredPoint]:
        name = self._target(collection)
        records = self._call(
            "retrieve",
            self.client().retrieve,
            collection_name=name,
            ids=list(ids),
            with_payload=True,
            with_vectors=True,
        )
        out = []
        for r in records:
            vec = r.vector
            vectors = {k: list(v) for k, v in vec.items()} if isinstance(vec, Mapping) else {"": list(vec or [])}
            out.append(StoredPoint(id=r.id, vectors=vectors, payload=dict(r.payload or {})))
        return out

    def set_payload(self, ids: Sequence[PointId], payload: Mapping[str, Any], *, collection: str | None = None) -> None:
        self._call(
            "set payload",
            self.client().set_payload,
            collection_name=self._target(collection),
            payload=dict(payload),
            points=list(ids),
            wait=True,
        )

    def overwrite_payload(
        self, ids: Sequence[PointId], payload: Mapping[str, Any], *, collection: str | None = None
    ) -> None:
        self._call(
            "overwrite payload",
            self.client().overwrite_payload,
            collection_name=self._target(collection),
            payload=dict(payload),
            points=list(ids),
            wait=True,
        )

    def upsert_points(self, points: Sequence[StoredPoint], *, collection: str | None = None) -> None:
        """Write the points as given. Into a Cosine collection, local mode persists the vector as written and
        normalises only its in-memory copy (a client that reopens the folder reads the written bits); a server
        normalises once on write. Quarantine verifies by reading back from a reopened client."""
        from qdrant_client import models

        structs = [
            models.PointStruct(
                id=p.id,
                vector=p.vectors[""] if set(p.vectors) == {""} else dict(p.vectors),
                payload=dict(p.payload),
            )
            for p in points
        ]
        self._call("upsert", self.client().upsert, collection_name=self._target(collection), points=structs, wait=True)

    def delete_points(self, ids: Sequence[PointId], *, collection: str | None = None) -> None:
        from qdrant_client import models

        self._call(
            "delete",
            self.client().delete,
            collection_name=self._target(collection),
            points_selector=models.PointIdsList(points=list(ids)),
            wait=True,
        )

    def collection_exists(self, name: str) -> bool:
        return bool(self._call("check collection", self.client().collection_exists, name))

    def ensure_collection_like(self, name: str) -> None:
        """Create ``name`` with the source's vectors, Cosine ones as Dot: Qdrant normalises what is written to a
        Cosine collection (a server on write, local mode in memory), Dot keeps the bits, and on vectors that are
        already normalised Dot ranks as Cosine does. An existing collection is used as it is."""
        from qdrant_client import models

        if self.collection_exists(name):
            return
        source = self._require_collection()
        raw = self._call("describe", self.client().get_collection, source)
        params = raw.config.params

        def as_written(p: Any) -> Any:
            if getattr(p, "distance", None) == models.Distance.COSINE:
                return p.model_copy(update={"distance": models.Distance.DOT})
            return p

        vectors = params.vectors
        vectors = (
            {k: as_written(v) for k, v in vectors.items()} if isinstance(vectors, Mapping) else as_written(vectors)
        )
        self._call(
            "create collection",
            self.client().create_collection,
            collection_name=name,
            vectors_config=vectors,
            sparse_vectors_config=params.sparse_vectors,
        )

    # -- isolation probes and posture ---------------------------------------------------------------
    def probe_search(
        self,
        vector: np.ndarray,
        *,
        tenant_field: str,
        tenant: str,
        limit: int = 10,
        filter_spec: Mapping[str, Any] | None = None,
    ) -> list[ProbeHit]:
        from qdrant_client import models

        info = self.describe()
        query_filter = (
            models.Filter.model_validate(dict(filter_spec))
            if filter_spec is not None
            else models.Filter(must=[models.FieldCondition(key=tenant_field, match=models.MatchValue(value=tenant))])
        )
        result = self._call(
            "probe search",
            self.client().query_points,
            collection_name=info.name,
            query=np.asarray(vector, dtype=np.float32).tolist(),
            using=info.vector_name,
            query_filter=query_filter,
            limit=limit,
            with_payload=True,
        )
        return [ProbeHit(id=p.id, score=float(p.score), payload=dict(p.payload or {})) for p in result.points]

    def posture(self, *, tenant_field: str | None) -> dict[str, Any]:
        """Tenant-isolation facts: ``tenant_index`` / ``tenant_index_is_tenant`` (None = cannot tell) and, on a
        server, the HNSW ``m`` / ``payload_m`` (Qdrant's multitenancy guide: ``m=0``, ``payload_m>0``)."""
        info = self.describe()
        facts: dict[str, Any] = {"mode": self.mode}
        if self.mode == "local":
            # local mode accepts create_payload_index but keeps no index, so absence proves nothing
            facts["tenant_index"] = None
            facts["tenant_index_is_tenant"] = None
            facts["not_checkable_in_local_mode"] = [
                "payload indexes and is_tenant (local mode keeps no indexes)",
                "HNSW payload_m per-tenant graphs",
                "API-key scopes and JWT collection access",
            ]
            return facts
        if tenant_field:
            index = info.payload_indexes.get(tenant_field)
            facts["tenant_index"] = index is not None
            facts["tenant_index_is_tenant"] = bool(index and index.get("is_tenant"))
        raw = self._call("describe", self.client().get_collection, info.name)
        hnsw = getattr(raw.config, "hnsw_config", None)
        facts["hnsw_m"] = getattr(hnsw, "m", None)
        facts["hnsw_payload_m"] = getattr(hnsw, "payload_m", None)
        facts["not_checkable"] = ["API-key scopes and JWT collection access"]
        return facts


def _id_order(pid: Any) -> tuple[int, int, str]:
    """Qdrant's point order: unsigned integer ids first, by value, then UUIDs by their bytes (which is the order
    of their canonical lowercase text)."""
    if isinstance(pid, int):
        return (0, pid, "")
    return (1, 0, str(pid).lower())
