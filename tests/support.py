"""Test helpers: build real Qdrant local stores, run scans, read a collection back, record webhook posts."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from auditor.context import ScanSettings
from auditor.engine import Scanner, ScanOptions, ScanResult
from auditor.ledger import Ledger
from auditor.registry import connector_for, detector_classes
from auditor.types import FieldMap

DISTANCES = {"cosine": "Cosine", "dot": "Dot", "euclid": "Euclid"}


DATA = Path(__file__).parent / "data"


def load_jsonl(name: str) -> list[dict[str, Any]]:
    """Rows of ``tests/data/<name>`` (see tests/data/README.md for sources and licences)."""
    with open(DATA / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@contextmanager
def unvalidated_vectors() -> Any:
    """Let qdrant-client local mode store NaN/odd vectors, as a store fed by other tools may hold them."""
    import qdrant_client.local.local_collection as lc

    original = lc.validate_dense_vector
    lc.validate_dense_vector = lambda *a, **k: None
    try:
        yield
    finally:
        lc.validate_dense_vector = original


def build_qdrant_store(
    path: Path | str,
    vectors: np.ndarray | Sequence[Any],
    payloads: Sequence[dict[str, Any]],
    *,
    collection: str = "docs",
    distance: str = "cosine",
    ids: Sequence[Any] | None = None,
    validate: bool = True,
) -> str:
    """Write a local Qdrant store at ``path``; returns its ``qdrant+local://`` URI."""
    from qdrant_client import QdrantClient, models

    vecs = [np.asarray(v, dtype=np.float32).tolist() for v in vectors]
    dim = len(vecs[0])
    client = QdrantClient(path=str(path))
    try:
        client.create_collection(
            collection,
            vectors_config=models.VectorParams(size=dim, distance=getattr(models.Distance, distance.upper())),
        )
        point_ids = list(ids) if ids is not None else list(range(len(vecs)))
        points = [
            models.PointStruct(id=i, vector=v, payload=dict(p))
            for i, v, p in zip(point_ids, vecs, payloads, strict=True)
        ]
        if validate:
            client.upsert(collection, points)
        else:
            with unvalidated_vectors():
                client.upsert(collection, points)
    finally:
        client.close()
    return f"qdrant+local://{Path(path).resolve()}"


def read_collection(uri: str, collection: str = "docs") -> dict[Any, tuple[bytes, dict[str, Any]]]:
    """Every point as ``{id: (float32 vector bytes, payload)}``: bit-exact, NaN-safe (proves a scan changed nothing)."""
    from qdrant_client import QdrantClient

    client = QdrantClient(path=uri.removeprefix("qdrant+local://"))
    try:
        out: dict[Any, tuple[bytes, dict[str, Any]]] = {}
        offset = None
        while True:
            recs, offset = client.scroll(collection, limit=256, offset=offset, with_vectors=True, with_payload=True)
            for r in recs:
                out[r.id] = (np.asarray(r.vector, dtype=np.float32).tobytes(), dict(r.payload or {}))
            if offset is None:
                return out
    finally:
        client.close()


def run_scan(
    uri: str,
    ledger_url: str,
    *,
    collection: str = "docs",
    detectors: Sequence[str] | None = None,
    field_map: FieldMap | None = None,
    settings: ScanSettings | None = None,
    params: dict[str, dict[str, Any]] | None = None,
) -> ScanResult:
    """One scan through the real engine, ledger and connector."""
    classes = detector_classes()
    names = list(detectors) if detectors is not None else [n for n, c in classes.items() if c.enabled_by_default]
    dets = [classes[n](**(params or {}).get(n, {})) for n in names]
    ledger = Ledger(ledger_url).open()
    connector = connector_for(uri, collection=collection)
    try:
        opts = ScanOptions(
            field_map=field_map or FieldMap(text="text", tenant="tenant"),
            settings=settings or ScanSettings(),
            show_progress=False,
        )
        return Scanner(ledger, connector, dets, opts).run()
    finally:
        connector.close()
        ledger.dispose()


class WebhookRecorder:
    """A local HTTP server (127.0.0.1, a free port) that keeps every POST it gets (request line, headers, body
    bytes) and answers ``status``; a context manager serving in a thread."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.status = 200
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                recorder.requests.append((self.requestline, dict(self.headers), body))
                self.send_response(recorder.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/vecaudit"

    @property
    def received(self) -> list[dict[str, Any]]:
        """The JSON documents posted."""
        return [json.loads(body) for _, _, body in self.requests]

    @property
    def headers(self) -> list[dict[str, str]]:
        return [headers for _, headers, _ in self.requests]

    def raw(self) -> bytes:
        """Every byte received, request lines and headers included."""
        return b"\n".join(f"{line}\n{json.dumps(headers)}\n".encode() + body for line, headers, body in self.requests)

    def __enter__(self) -> WebhookRecorder:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
