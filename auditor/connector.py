"""The connector contract: read a collection in resumable batches, describe it, fetch and (optionally) write."""

from __future__ import annotations

import abc
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import numpy as np

from auditor.errors import ConfigError
from auditor.partitions import DEFAULT_TARGET_POINTS, Partition, PartitionPlan, is_whole, whole
from auditor.types import CollectionInfo, PointBatch, PointId, StoredPoint

# An opaque, JSON-serialisable position in a collection (stored in the ledger to resume a scan).
Cursor = Any


@dataclass(frozen=True)
class SourceURI:
    """A parsed store URI such as ``qdrant+local:///data/store`` or ``qdrant://host:6333``."""

    raw: str
    scheme: str
    host: str | None
    port: int | None
    path: str
    query: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, uri: str) -> SourceURI:
        if uri == ":memory:":
            return cls(raw=uri, scheme="qdrant+memory", host=None, port=None, path=":memory:")
        try:
            parts = urlsplit(uri)
        except ValueError as e:  # e.g. "Invalid IPv6 URL" for http://[::1
            raise ConfigError(
                f"malformed store URI {uri!r}: {e}",
                hint="check the brackets of an IPv6 host (qdrant://[::1]:6333) and percent-encode odd characters",
            ) from e
        if not parts.scheme or "://" not in uri:
            raise ConfigError(
                f"not a store URI: {uri!r}",
                hint="write it as SCHEME://..., e.g. qdrant+local:///path/to/store or qdrant://localhost:6333",
            )
        try:
            port = parts.port
        except ValueError as e:
            raise ConfigError(f"bad port in store URI {uri!r}", hint="a port is a number from 0 to 65535") from e
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return cls(raw=uri, scheme=parts.scheme.lower(), host=parts.hostname, port=port, path=parts.path, query=query)

    def redacted(self, *, keep_user: bool = True) -> str:
        """The URI with any user info password and secret-looking query values removed (safe to store)."""
        if self.raw == ":memory:":
            return self.raw
        parts = urlsplit(self.raw)
        netloc = parts.hostname or ""
        if ":" in netloc:  # an IPv6 address keeps its brackets
            netloc = f"[{netloc}]"
        if parts.username and keep_user:
            netloc = f"{parts.username}@{netloc}"
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        query = "&".join(
            f"{k}={'***' if any(s in k.lower() for s in ('key', 'token', 'password', 'secret')) else v}"
            for k, v in self.query.items()
        )
        # built by hand: urlunsplit drops the "//" of an empty authority (qdrant+local:///path)
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")

    def refuse_credentials(self, store: str, env_var: str | None, *, user_allowed: bool) -> None:
        """Credentials come from the environment only. A password in the URI is refused, and so is a user name
        where ``store`` has no use for one (it would be a key put in the wrong place, and kept in the ledger)."""
        if self.raw == ":memory:":
            return
        parts = urlsplit(self.raw)
        instead = f" and export {env_var} instead" if env_var else f" ({store} takes no credentials)"
        if parts.password is not None:
            raise ConfigError(
                f"a password is written in the store URI {self.redacted()}",
                hint=f"remove it from the URI{instead}; URIs end up in logs and the ledger",
            )
        if parts.username and not user_allowed:
            raise ConfigError(
                f"the store URI {self.redacted(keep_user=False)} carries a user name, which {store} does not use",
                hint=f"remove the 'user@' part{instead}; URIs end up in logs and the ledger",
            )


@dataclass(frozen=True)
class ProbeHit:
    """One result of a filtered similarity search used by isolation probes."""

    id: PointId
    score: float
    payload: dict[str, Any]


class Connector(abc.ABC):
    """Read access to one collection of one store.

    Contract: the constructor does no I/O; ``describe`` and ``iter_batches`` never write; backend
    exceptions are wrapped in :class:`~auditor.errors.ConnectorError` naming collection and operation.
    Credentials come from environment variables only.

    Quarantine (``auditor.quarantine``) is the only writer. A store that supports it declares
    ``"quarantine:tag"`` (needs ``fetch``, ``set_payload``, ``overwrite_payload``) and/or
    ``"quarantine:move"`` (needs ``fetch_points``, ``upsert_points``, ``delete_points``,
    ``collection_exists``, ``ensure_collection_like``); the defaults raise ``ConnectorError("... does not
    support ...")``. Writes must keep vectors bit-exact as far as the store allows (quarantine verifies by
    reading back) and must raise ``ConnectorError`` when the store refuses them (read-only key, permission).
    """

    #: URI schemes this connector accepts (e.g. ``("qdrant", "qdrants", "qdrant+local")``).
    schemes: ClassVar[tuple[str, ...]] = ()
    #: What the store supports beyond reading: ``"probe"``, ``"quarantine:tag"``, ``"quarantine:move"``.
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: The environment variable that carries the store's credential (named when a URI carries one).
    credentials_env: ClassVar[str | None] = None
    #: Whether a user name in the URI means something to the store (a database role); else it is refused.
    uri_user: ClassVar[bool] = False

    def __init__(
        self,
        uri: SourceURI,
        *,
        collection: str | None = None,
        vector: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        store = type(self).__name__.removesuffix("Connector")
        uri.refuse_credentials(store, self.credentials_env, user_allowed=self.uri_user)
        self.uri = uri
        self.collection = collection
        self.vector = vector
        self.options: dict[str, Any] = dict(options or {})

    @property
    def collection_key(self) -> str:
        """Stable name of the audited collection for the ledger (credentials redacted)."""
        key = f"{self.uri.redacted()}#{self.collection or ''}"
        return f"{key}:{self.vector}" if self.vector else key

    @abc.abstractmethod
    def describe(self) -> CollectionInfo:
        """Dimension, distance, point count, vector names and payload schema of the collection."""

    @abc.abstractmethod
    def iter_batches(self, *, batch_size: int = 512, start: Cursor = None) -> Iterator[tuple[PointBatch, Cursor]]:
        """Yield ``(batch, cursor_after_batch)`` pages; ``start`` resumes from a cursor, ``None`` at the end."""

    @abc.abstractmethod
    def fetch(self, ids: Sequence[PointId]) -> list[StoredPoint]:
        """Complete stored points (all vectors bit-exact, payload) for ``ids``; absent ids are skipped."""

    # -- partitioned reading (the Ray engine, auditor.ray_engine) --------------------------------------
    def partitions(self, *, target_points: int = DEFAULT_TARGET_POINTS) -> PartitionPlan:
        """Split the collection into independent read partitions of about ``target_points`` points, computed from
        cheap metadata (row groups, key listings); read in order they give what ``iter_batches`` gives, in the same
        order. A store that cannot split returns one partition and says why (the default)."""
        return whole(f"{type(self).__name__.removesuffix('Connector')} stores are read as one partition")

    def iter_partition(
        self, partition: Partition, *, batch_size: int = 512, start: Cursor = None
    ) -> Iterator[tuple[PointBatch, Cursor]]:
        """Like ``iter_batches``, restricted to one partition of :meth:`partitions`; ``start`` resumes within it
        and the cursor is None after the partition's last page."""
        if not is_whole(partition):
            from auditor.errors import ConnectorError

            raise ConnectorError(f"{type(self).__name__} cannot read partition {partition.label!r}")
        return self.iter_batches(batch_size=batch_size, start=start)

    def probe_search(
        self,
        vector: np.ndarray,
        *,
        tenant_field: str,
        tenant: str,
        limit: int = 10,
        filter_spec: Mapping[str, Any] | None = None,
    ) -> list[ProbeHit]:
        """Run the tenant-filtered similarity search a RAG app would run (stores with ``"probe"``)."""
        from auditor.errors import ConnectorError

        raise ConnectorError(f"{type(self).__name__} cannot run isolation probes")

    def posture(self, *, tenant_field: str | None) -> dict[str, Any]:
        """Store-level tenant-isolation facts (indexes, row-level security); empty when unknown."""
        return {}

    # -- writing (quarantine only; stores with "quarantine:tag" / "quarantine:move") -------------------
    # The only writes vecaudit ever makes. ``collection=None`` means the audited collection; every method
    # waits until the store has applied the write, and is idempotent (re-running it after a crash is safe).

    def _unsupported(self, what: str) -> Any:
        from auditor.errors import ConnectorError

        raise ConnectorError(f"{type(self).__name__} does not support {what}", hint="use a store with quarantine")

    def fetch_points(self, ids: Sequence[PointId], *, collection: str | None = None) -> list[StoredPoint]:
        """Like :meth:`fetch`, from ``collection`` (e.g. the quarantine collection) when given."""
        if collection is None or collection == self.collection:
            return self.fetch(ids)
        return self._unsupported("reading another collection")

    def set_payload(self, ids: Sequence[PointId], payload: Mapping[str, Any], *, collection: str | None = None) -> None:
        """Merge ``payload``'s keys into each point's payload (other keys and vectors untouched)."""
        self._unsupported("payload writes")

    def overwrite_payload(
        self, ids: Sequence[PointId], payload: Mapping[str, Any], *, collection: str | None = None
    ) -> None:
        """Replace each point's whole payload with ``payload`` (vectors untouched)."""
        self._unsupported("payload writes")

    def upsert_points(self, points: Sequence[StoredPoint], *, collection: str | None = None) -> None:
        """Write complete points (same ids, every named vector as given, payload) replacing any existing ones."""
        self._unsupported("point writes")

    def delete_points(self, ids: Sequence[PointId], *, collection: str | None = None) -> None:
        """Delete points by id; absent ids are ignored."""
        self._unsupported("point deletes")

    def collection_exists(self, name: str) -> bool:
        """Whether a collection named ``name`` exists in this store."""
        return bool(self._unsupported("listing collections"))

    def ensure_collection_like(self, name: str) -> None:
        """Create ``name`` with the audited collection's vector configuration unless it already exists."""
        self._unsupported("creating collections")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and files."""

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cursor_to_json(cursor: Cursor) -> str | None:
    return None if cursor is None else json.dumps(cursor)


def cursor_from_json(text: str | None) -> Cursor:
    return None if text is None else json.loads(text)
