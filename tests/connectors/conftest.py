"""Fixtures for connector-specific tests: the real engines of the contract suite and small stores of
deterministic vectors (these tests are about schemas and errors, not about text)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "contract"))

from connector_stores import chroma_server, create_database, pgvector_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    with pgvector_server() as url:
        yield url


@pytest.fixture
def pg_db(pg_server: str, request: pytest.FixtureRequest) -> str:
    """A fresh database with the vector extension, named after the test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:40] + uuid.uuid4().hex[:8]
    return create_database(pg_server, name)


@pytest.fixture(scope="session")
def chroma_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    with chroma_server(tmp_path_factory.mktemp("chroma") / "server") as address:
        yield address


@pytest.fixture(scope="session")
def small_data() -> tuple[list[int], np.ndarray, list[dict[str, Any]]]:
    """40 deterministic 8-d vectors, two tenants, ids 100..139."""
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((40, 8)).astype(np.float32)
    ids = list(range(100, 140))
    payloads = [{"text": f"document {i}", "tenant": "acme" if i % 2 else "globex"} for i in ids]
    return ids, vectors, payloads
