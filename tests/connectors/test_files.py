"""File connector on real Parquet, JSONL and NPZ exports: variable-length float64 vectors, exports without
ids, and one clear error for a missing file, an unknown format, bad lines and unsafe arrays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from auditor.errors import ConfigError, ConnectorError, StoreNotFoundError
from auditor.registry import connector_for


def test_parquet_float64_list_vectors_are_returned_as_stored(tmp_path: Path) -> None:
    path = tmp_path / "dump.parquet"
    vectors = [[0.1, 0.2, 1e-300], [1.0 / 3.0, 2.0, -0.5]]
    pq.write_table(pa.table({"key": ["a", "b"], "emb": vectors, "text": ["x", "y"]}), path)
    with connector_for(f"file://{path}?id=key") as conn:
        info = conn.describe()
        points = conn.fetch(["b"])
    assert (info.dim, info.count, info.vector_name) == (3, 2, "emb")
    assert points[0].vectors[""] == vectors[1] and points[0].payload == {"text": "y"}


def test_npz_without_ids_uses_row_numbers_and_streams_from_a_cursor(tmp_path: Path, small_data: Any) -> None:
    _, vectors, payloads = small_data
    path = tmp_path / "dump.npz"
    np.savez_compressed(path, vectors=vectors, tenant=np.array([p["tenant"] for p in payloads]))
    with connector_for(f"file://{path}") as conn:
        pages = list(conn.iter_batches(batch_size=15))
        resumed = list(conn.iter_batches(batch_size=15, start=pages[0][1]))
    assert [c for _, c in pages] == [15, 30, None]
    assert pages[0][0].ids == list(range(15)) and pages[1][0].payloads[0] == {"tenant": payloads[15]["tenant"]}
    assert [b.ids for b, _ in resumed] == [b.ids for b, _ in pages[1:]]
    assert np.asarray(resumed[-1][0].vectors[-1]).tobytes() == vectors[-1].tobytes()


def test_jsonl_resume_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "dump.jsonl"
    rows = [{"id": f"p{i}", "vector": [float(i), 1.0], "text": f"t{i}"} for i in range(5)]
    path.write_text("\n".join(json.dumps(r) + ("\n" if i == 2 else "") for i, r in enumerate(rows)) + "\n\n")
    with connector_for(f"file://{path}") as conn:
        pages = list(conn.iter_batches(batch_size=2))
        rest = [i for b, _ in conn.iter_batches(batch_size=2, start=pages[0][1]) for i in b.ids]
    assert [b.ids for b, _ in pages] == [["p0", "p1"], ["p2", "p3"], ["p4"]]
    assert pages[-1][1] is None and rest == ["p2", "p3", "p4"]


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with connector_for(f"file://{tmp_path / 'gone.parquet'}") as conn, pytest.raises(StoreNotFoundError):
        conn.describe()
    (tmp_path / "dump.csv").write_text("id,vector\n")
    with connector_for(f"file://{tmp_path / 'dump.csv'}") as conn, \
            pytest.raises(ConfigError, match=r"supported: \.parquet, \.jsonl, \.npz"):
        conn.describe()


def test_parquet_bad_columns(tmp_path: Path) -> None:
    path = tmp_path / "dump.parquet"
    pq.write_table(pa.table({"id": [1], "vector": ["[0.1, 0.2]"], "other": [[1, 2]]}), path)
    with connector_for(f"file://{path}?vector=vector") as conn, \
            pytest.raises(ConfigError, match="is string, not a list of floats"):
        conn.describe()
    with connector_for(f"file://{path}") as conn, \
            pytest.raises(ConfigError, match=r"no vector column .* vector \(string\)"):
        conn.describe()


def test_jsonl_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "dump.jsonl"
    path.write_text('{"id": 1, "vector": [1.0]}\n{"id": 2, "vector": [1.0\n')
    with connector_for(f"file://{path}") as conn, pytest.raises(ConnectorError, match=r"ending at byte 52 .* not JSON"):
        list(conn.iter_batches())
    path.write_text('{"id": 1, "embedding": [1.0]}\n')
    with connector_for(f"file://{path}") as conn, pytest.raises(ConfigError, match="no vector key 'vector'"):
        conn.describe()


def test_npz_pickled_arrays_are_never_loaded(tmp_path: Path) -> None:
    path = tmp_path / "dump.npz"
    np.savez(path, vectors=np.ones((2, 3), np.float32), meta=np.array([{"a": 1}, None], dtype=object))
    with connector_for(f"file://{path}") as conn, pytest.raises(ConfigError, match="Python objects"):
        conn.describe()
    np.savez(path, embeddings=np.ones((2, 3), np.float32))
    with connector_for(f"file://{path}") as conn, pytest.raises(ConfigError, match="no 2-D array 'vectors'"):
        conn.describe()


def test_quarantine_on_an_export_exits_with_one_clear_message(tmp_path: Path) -> None:
    """A finding on an export (a zero vector) cannot be quarantined there: exit 3, the reason, no traceback."""
    from click.testing import CliRunner

    from auditor.cli.main import cli

    path = tmp_path / "dump.parquet"
    vectors = [[0.6, 0.8, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    pq.write_table(pa.table({"id": [1, 2, 3], "vector": vectors, "text": ["a", "b", "c"]}), path)
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    runner = CliRunner()
    scan = runner.invoke(cli, ["scan", f"file://{path}", "--detector", "integrity", "--ledger", ledger,
                               "--format", "json"])
    assert scan.exit_code == 1, scan.output  # the zero vector is a finding
    scan_id = json.loads(scan.stdout)["scan"]["id"]
    for mode in ("tag", "move"):
        result = runner.invoke(cli, ["quarantine", "apply", "--scan", str(scan_id), "--force", "--yes", "--mode", mode,
                                     "--ledger", ledger])
        assert result.exit_code == 3, result.output
        assert f"FileConnector cannot quarantine in {mode} mode" in result.output
        assert "read-only" in result.output and "Traceback" not in result.output
    assert pq.read_table(path).column("vector").to_pylist() == vectors


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"file://{path}"


def test_jsonl_dimension_is_the_majority_not_the_first_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rows = [{"id": i, "vector": rng.standard_normal(12 if i in (0, 7) else 24).tolist()} for i in range(50)]
    with connector_for(_jsonl(tmp_path / "dump.jsonl", rows)) as conn:
        info = conn.describe()
    assert (info.dim, info.count) == (24, 50)


def test_jsonl_dimension_sample_stays_bounded_and_spread_over_the_file() -> None:
    from connectors.files import _RowSample

    sample = _RowSample(limit=64)
    for index in range(10_000):  # first 4,000 rows 8-d, the other 6,000 16-d
        if sample.wants(index):
            sample.add(index, {"id": index, "vector": [0.0] * (8 if index < 4000 else 16)}, "vector")
    assert sample.seen == 10_000 and sample.stride == 256
    assert sample.majority_dim() == 16 and sample.share_with("id") == 1.0


def test_parquet_variable_lists_take_the_majority_length(tmp_path: Path) -> None:
    path = tmp_path / "dump.parquet"
    vectors = [[1.0] * 3] + [[0.5] * 5 for _ in range(9)]
    pq.write_table(pa.table({"id": list(range(10)), "vector": vectors}), path, row_group_size=4)
    with connector_for(f"file://{path}") as conn:
        assert conn.describe().dim == 5


def test_jsonl_invalid_utf8_and_lone_surrogate_escapes_are_read_not_fatal(tmp_path: Path) -> None:
    from auditor.batching import resolve_batch
    from auditor.types import FieldMap

    path = tmp_path / "dump.jsonl"
    lines = [
        b'\xef\xbb\xbf{"id": 0, "vector": [1.0, 0.0], "text": "fine"}',  # byte-order mark
        b'{"id": 1, "vector": [0.0, 1.0], "text": "bad byte \xff here"}',
        b'{"id": 2, "vector": [1.0, 1.0], "text": "ok", "meta": {"note": "x\\ud800y"}}',
        b'{"id": 3, "text": "no vector key"}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    with connector_for(f"file://{path}") as conn:
        info = conn.describe()
        pages = list(conn.iter_batches())
    batch = resolve_batch(pages[0][0], FieldMap(text="text"), info.dim)
    assert batch.ids == [0, 1, 2, 3] and batch.texts[1] == "bad byte \\udcff here"
    assert batch.payloads[2]["meta"]["note"] == "x\\ud800y" and list(batch.stored_dims) == [2, 2, 2, 0]
    assert [[r.path for r in batch.repairs_of(i).repairs] for i in range(4)] == [[], ["text"], ["meta.note"], []]


def test_parquet_string_column_with_invalid_utf8_is_read_not_fatal(tmp_path: Path) -> None:
    raw = pa.array([b"ok", b"bad\xff"], pa.binary())
    text = pa.Array.from_buffers(pa.string(), 2, raw.buffers())  # what a writer that skips validation leaves
    ids = pa.Array.from_buffers(pa.string(), 2, pa.array([b"a", b"b\xfe"], pa.binary()).buffers())
    path = tmp_path / "dump.parquet"
    pq.write_table(pa.table({"id": ids, "vector": [[0.1, 0.2], [0.3, 0.4]], "text": text}), path)
    with connector_for(f"file://{path}") as conn:
        (batch, _), = list(conn.iter_batches())
    assert batch.ids == ["a", "b\udcfe"] and batch.payloads == [{"text": "ok"}, {"text": "bad\udcff"}]


def test_npz_byte_string_fields_are_text_and_unicode_fields_keep_surrogates_for_the_sanitiser(tmp_path: Path) -> None:
    path = tmp_path / "dump.npz"
    np.savez(path, vectors=np.ones((2, 3), np.float32), ids=np.array([b"a", b"b\xff"]),
             text=np.array(["fine", "lone \ud800"]), tag=np.array([b"x", b"y"]))
    with connector_for(f"file://{path}") as conn:
        (batch, _), = list(conn.iter_batches())
    assert batch.ids == ["a", "b\udcff"]
    assert batch.payloads == [{"text": "fine", "tag": "x"}, {"text": "lone \ud800", "tag": "y"}]
