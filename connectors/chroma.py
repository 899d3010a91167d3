"""Chroma connector: an on-disk store (``chroma:///path``, PersistentClient) or a server
(``chroma+http://host:8000``, ``chroma+https://...``), read page by page with ``Collection.get``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from auditor.connector import Connector, Cursor, ProbeHit, SourceURI
from auditor.errors import ConfigError, ConnectorError, StoreNotFoundError
from auditor.types import CollectionInfo, Distance, PointBatch, PointId, StoredPoint
from connectors.common import call_backend, first_line, parse_distance, resolve_name

_INCLUDE = ["embeddings", "metadatas", "documents"]
# Chroma metadata holds scalars and flat lists only: a dict value (the quarantine flag) is written as the list
# [_JSON_MARKER, json] and read back as the dict. The retrieval guard filters on the marker:
# where={"vecaudit_quarantine": {"$not_contains": "vecaudit:json"}} (Chroma has no "key absent" operator).
_JSON_MARKER = "vecaudit:json"
_SCALARS = (str, int, float, bool)


class ChromaConnector(Connector):
    """Reads a Chroma collection with ``get(limit, offset)``; the cursor is the row offset.

    The Chroma document is exposed as the payload field ``document`` (``?document_field=NAME`` to rename it),
    next to the metadata keys, so ``--text-field document`` audits it. Server auth: ``CHROMA_AUTH_TOKEN`` is
    sent as a bearer token; ``?tenant=`` and ``?database=`` pick a Chroma tenant/database. Distance comes from
    the collection's HNSW/SPANN configuration (Chroma's default is l2).

    Quarantine: tag (metadata flag, written as a JSON list, see ``_JSON_MARKER``) and move (to a sibling
    collection with the same configuration, a cosine space as ``ip`` so the copy keeps its bits). Chroma rounds
    each vector written to a cosine collection in a way of its own (measured: single values one ulp off, the norm
    unchanged), so a point released into one comes back bit-exact only where that rounding leaves it alone
    (measured on an AVX-512 machine: 113 of 1,008 MiniLM vectors moved); quarantine notes each such point and the
    ledger backup keeps the exact bits. Tag mode never rewrites vectors.
    """

    schemes = ("chroma", "chroma+http", "chroma+https")
    credentials_env = "CHROMA_AUTH_TOKEN"
    capabilities = frozenset({"probe", "quarantine:tag", "quarantine:move"})

    def __init__(
        self, uri: SourceURI, *, collection: str | None = None, vector: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(uri, collection=resolve_name(uri, collection, param="collection", kind="collection"),
                         vector=vector, options=options)
        self.document_field = str(self.options.get("document_field") or uri.query.get("document_field") or "document")
        self._client: Any = None
        self._collection: Any = None
        self._others: dict[str, Any] = {}
        self._info: CollectionInfo | None = None

    @property
    def where(self) -> str:
        return f"Chroma collection {self.collection!r} at {self.uri.redacted()}"

    def client(self) -> Any:
        if self._client is None:
            import chromadb
            tenant = self.uri.query.get("tenant", chromadb.DEFAULT_TENANT)
            database = self.uri.query.get("database", chromadb.DEFAULT_DATABASE)
            settings = chromadb.Settings(anonymized_telemetry=False)
            if self.uri.scheme == "chroma":
                path = Path(self.uri.path)
                # PersistentClient would silently create an empty store at a mistyped path.
                if not (path / "chroma.sqlite3").is_file():
                    raise StoreNotFoundError(
                        f"no Chroma store at {path}", hint="give the folder PersistentClient(path=...) wrote"
                    )
                self._client = call_backend("open store", self.where, chromadb.PersistentClient, path=str(path),
                                            settings=settings, tenant=tenant, database=database)
            else:
                token = os.environ.get("CHROMA_AUTH_TOKEN")
                headers = {"Authorization": f"Bearer {token}"} if token else None
                self._client = call_backend(
                    "connect", self.where, chromadb.HttpClient, host=self.uri.host or "localhost",
                    port=self.uri.port or 8000, ssl=self.uri.scheme == "chroma+https", headers=headers,
                    settings=settings, tenant=tenant, database=database,
                )
        return self._client

    def _open_collection(self) -> Any:
        if self._collection is not None:
            return self._collection
        from chromadb.errors import NotFoundError

        client = self.client()
        names = [c.name for c in call_backend("list collections", self.where, client.list_collections)]
        if not self.collection:
            raise ConfigError("no collection given", hint=f"add --collection NAME; this store has: "
                                                          f"{', '.join(names) or 'none'}")
        if self.collection not in names:
            raise StoreNotFoundError(f"collection {self.collection!r} not found in {self.uri.redacted()}",
                                     hint=f"collections here: {', '.join(names) or 'none'}")
        # embedding_function=None: the auditor only reads stored vectors, it must never embed.
        self._collection = call_backend("open collection", self.where, client.get_collection, self.collection,
                                        embedding_function=None, not_found=(NotFoundError,))
        return self._collection

    def close(self) -> None:
        self._collection = None
        self._others = {}
        self._client = None

    # -- reading ------------------------------------------------------------------------------------
    def describe(self) -> CollectionInfo:
        if self._info is not None:
            return self._info
        if self.vector not in (None, ""):
            raise ConfigError(f"{self.where} has one unnamed vector; drop --vector {self.vector}")
        coll = self._open_collection()
        count = int(call_backend("count", self.where, coll.count))
        config = dict(getattr(coll, "configuration_json", None) or {})
        space = None
        for index in ("hnsw", "spann"):
            if isinstance(config.get(index), Mapping):
                space = config[index].get("space") or space
        space = space or (coll.metadata or {}).get("hnsw:space") or "l2"
        dim = 0
        if count:
            first = call_backend("read", self.where, coll.get, limit=1, include=["embeddings"])
            dim = len(first["embeddings"][0])
        self._info = CollectionInfo(
            name=str(self.collection), dim=dim, distance=parse_distance(space) or Distance.EUCLID, count=count,
            extra={"mode": "local" if self.uri.scheme == "chroma" else "server", "space": space,
                   "document_field": self.document_field},
        )
        return self._info

    def _payload(self, metadata: Mapping[str, Any] | None, document: str | None) -> dict[str, Any]:
        payload = {k: _decode(v) for k, v in (metadata or {}).items()}
        if document is not None:
            payload[self.document_field] = document
        return payload

    def _points(self, result: Mapping[str, Any]) -> Iterator[tuple[str, Any, dict[str, Any]]]:
        ids = result["ids"]
        embeddings = result.get("embeddings")
        metadatas = result.get("metadatas") or [None] * len(ids)
        documents = result.get("documents") or [None] * len(ids)
        for i, pid in enumerate(ids):
            vec = embeddings[i] if embeddings is not None else None
            yield pid, vec, self._payload(metadatas[i], documents[i])

    def iter_batches(self, *, batch_size: int = 512, start: Cursor = None) -> Iterator[tuple[PointBatch, Cursor]]:
        info = self.describe()
        coll = self._open_collection()
        offset = int(start or 0)
        while offset < info.count:
            page = call_backend("read page", self.where, coll.get, limit=batch_size, offset=offset, include=_INCLUDE)
            if not page["ids"]:
                return
            batch = PointBatch(ids=[], vectors=[], payloads=[])
            for pid, vec, payload in self._points(page):
                batch.ids.append(pid)
                batch.vectors.append(None if vec is None else np.asarray(vec, dtype=np.float32))
                batch.payloads.append(payload)
            offset += len(batch)
            yield batch, (offset if offset < info.count else None)

    def fetch(self, ids: Sequence[PointId]) -> list[StoredPoint]:
        return self.fetch_points(ids)

    # -- writing (quarantine) ------------------------------------------------------------------------
    def _coll(self, name: str | None) -> Any:
        """The audited collection (``name`` None or its own name) or another one of the store, e.g. the
        quarantine collection."""
        if name is None or name == self.collection:
            return self._open_collection()
        if name not in self._others:
            from chromadb.errors import NotFoundError

            self._others[name] = call_backend("open collection", f"Chroma collection {name!r}",
                                              self.client().get_collection, name, embedding_function=None,
                                              not_found=(NotFoundError,))
        return self._others[name]

    def fetch_points(self, ids: Sequence[PointId], *, collection: str | None = None) -> list[StoredPoint]:
        coll = self._coll(collection)
        wanted = [str(i) for i in ids]
        if not wanted:
            return []
        result = call_backend("fetch", self.where, coll.get, ids=wanted, include=_INCLUDE)
        found = {pid: StoredPoint(id=pid, vectors={"": np.asarray(vec, dtype=np.float32).tolist()}, payload=payload)
                 for pid, vec, payload in self._points(result)}
        return [found[i] for i in wanted if i in found]

    def _split(self, payload: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """A payload as Chroma's (document, metadata)."""
        metadata = {k: _encode(v) for k, v in payload.items() if k != self.document_field}
        return payload.get(self.document_field), metadata

    def _update(self, coll: Any, point: StoredPoint, metadata: dict[str, Any], document: str | None) -> None:
        """One metadata update; a changed document goes with the stored embedding, else Chroma would embed it."""
        changed = document is not None and document != point.payload.get(self.document_field)
        call_backend("write payload", self.where, coll.update, ids=[str(point.id)],
                     metadatas=[metadata] if metadata else None, documents=[document] if changed else None,
                     embeddings=[np.asarray(point.vectors[""], dtype=np.float32)] if changed else None)

    def set_payload(self, ids: Sequence[PointId], payload: Mapping[str, Any], *, collection: str | None = None) -> None:
        coll = self._coll(collection)
        document, metadata = self._split(payload)
        for point in self.fetch_points(ids, collection=collection):
            # update() merges metadata keys and leaves the embedding as stored
            self._update(coll, point, metadata, document)

    def overwrite_payload(
        self, ids: Sequence[PointId], payload: Mapping[str, Any], *, collection: str | None = None
    ) -> None:
        coll = self._coll(collection)
        document, metadata = self._split(payload)
        for point in self.fetch_points(ids, collection=collection):
            if document is None and self.document_field in point.payload:
                raise ConnectorError(f"cannot remove the document of point {point.id} in {self.where} by a payload "
                                     "write", hint="Chroma keeps a document once set")
            # update() deletes a metadata key set to None; every other key is replaced
            removed = {k: None for k in point.payload if k != self.document_field and k not in metadata}
            self._update(coll, point, {**metadata, **removed}, document)

    def upsert_points(self, points: Sequence[StoredPoint], *, collection: str | None = None) -> None:
        """Delete, then add: Chroma's upsert keeps old metadata keys and documents the new point does not name.
        One add per ``get_max_batch_size()`` points (each write is a commit of its own)."""
        coll = self._coll(collection)
        if not points:
            return
        for point in points:
            if set(point.vectors) != {""}:
                raise ConnectorError(f"point {point.id} has named vectors {sorted(point.vectors)}; a Chroma "
                                     "collection holds one unnamed vector")
        call_backend("upsert", self.where, coll.delete, ids=[str(p.id) for p in points])
        step = max(1, int(call_backend("read batch size", self.where, self.client().get_max_batch_size)))
        for lo in range(0, len(points), step):
            part = points[lo : lo + step]
            split = [self._split(p.payload) for p in part]
            call_backend("upsert", self.where, coll.add, ids=[str(p.id) for p in part],
                         embeddings=np.asarray([p.vectors[""] for p in part], dtype=np.float32),
                         metadatas=[metadata or None for _, metadata in split],
                         documents=[document for document, _ in split])

    def delete_points(self, ids: Sequence[PointId], *, collection: str | None = None) -> None:
        if ids:
            call_backend("delete", self.where, self._coll(collection).delete, ids=[str(i) for i in ids])

    def collection_exists(self, name: str) -> bool:
        return name in [c.name for c in call_backend("list collections", self.where, self.client().list_collections)]

    def ensure_collection_like(self, name: str) -> None:
        """The source's index configuration, a cosine space as ``ip``: a cosine collection rounds each written
        vector, ``ip`` keeps it as written (tests/quarantine, 1,008 vectors), and on normalised vectors ``ip`` ranks
        as cosine does. An existing collection is used as it is."""
        if self.collection_exists(name):
            return
        source = self._open_collection()
        config = dict(getattr(source, "configuration_json", None) or {})
        index = {k: _as_written(dict(config[k])) for k in ("hnsw", "spann") if isinstance(config.get(k), Mapping)}
        metadata = dict(source.metadata or {})
        if metadata.get("hnsw:space") == "cosine":
            metadata["hnsw:space"] = "ip"
        call_backend("create collection", f"Chroma collection {name!r}", self.client().get_or_create_collection,
                     name, configuration=index or None, metadata=metadata or None, embedding_function=None)

    # -- isolation probes ---------------------------------------------------------------------------
    def probe_search(
        self, vector: np.ndarray, *, tenant_field: str, tenant: str, limit: int = 10,
        filter_spec: Mapping[str, Any] | None = None,
    ) -> list[ProbeHit]:
        """Chroma's tenant idiom: ``where={tenant_field: tenant}`` (or a full ``where`` in ``filter_spec``)."""
        info = self.describe()
        where = dict(filter_spec) if filter_spec is not None else {tenant_field: tenant}
        try:
            result = self._open_collection().query(
                query_embeddings=[np.asarray(vector, dtype=np.float32)], n_results=limit, where=where,
                include=["metadatas", "documents", "distances"],
            )
        except (ConnectorError, ConfigError):
            raise
        except Exception as e:
            raise ConnectorError(f"probe search failed on {self.where}: {first_line(e)}") from e
        hits = []
        for pid, dist, meta, doc in zip(result["ids"][0], result["distances"][0], result["metadatas"][0],
                                        result["documents"][0], strict=True):
            # Chroma returns distances (cosine and ip as 1 - similarity); report a similarity, higher = closer.
            score = -float(dist) if info.distance is Distance.EUCLID else 1.0 - float(dist)
            hits.append(ProbeHit(id=pid, score=score, payload=self._payload(meta, doc)))
        return hits


def _as_written(index: dict[str, Any]) -> dict[str, Any]:
    """An HNSW/SPANN configuration whose space keeps vectors as written (cosine becomes ip)."""
    return {**index, "space": "ip"} if index.get("space") == "cosine" else index


def _encode(value: Any) -> Any:
    """A payload value as Chroma metadata: scalars and flat lists as they are, anything else as marked JSON."""
    if value is None or isinstance(value, _SCALARS):
        return value
    if isinstance(value, list) and value and all(isinstance(v, _SCALARS) for v in value):
        return value
    return [_JSON_MARKER, json.dumps(value, ensure_ascii=False)]


def _decode(value: Any) -> Any:
    if isinstance(value, list) and len(value) == 2 and value[0] == _JSON_MARKER and isinstance(value[1], str):
        return json.loads(value[1])
    return value
