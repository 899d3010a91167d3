"""Pass 1's quick paths give what the per-row paths give: a page of numpy rows resolved in one conversion (vectors,
stored lengths, vector hashes), the point table's spill file written on a thread in chunks, the valid-row mask
computed page by page."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import auditor.batching as batching
import auditor.context as context
from auditor.batching import resolve_batch
from auditor.context import PointTable
from auditor.hashing import vector_hash
from auditor.types import FieldMap, PointBatch


def _rows(dtype: str, n: int = 40, dim: int = 6, seed: int = 0) -> list[np.ndarray]:
    """Rows of one Arrow-like column: views of one 2-D array, with NaN, inf, -0.0 and (float64) overflow."""
    rng = np.random.default_rng(seed)
    if dtype.startswith("int"):
        flat = rng.integers(-1000, 1000, size=(n, dim)).astype(dtype)
    else:
        flat = rng.standard_normal((n, dim)).astype(dtype)
        flat[1, 2] = np.nan
        flat[2, 0] = np.inf
        flat[3] = 0.0
        flat[4, 1] = -0.0
        if dtype == "float64":
            flat[5, 3] = 1e300  # beyond float32: inf, as the per-row cast gives
    return list(flat)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int32", "int64", ">f4"])
def test_a_page_of_numpy_rows_resolves_as_row_by_row(dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _rows(dtype)
    ids = list(range(len(rows)))
    payloads: list[dict[str, Any]] = [{"tenant": f"t{i % 3}"} for i in ids]
    with monkeypatch.context() as m:
        m.setattr(batching, "_as_vector", None)  # the quick path converts no row on its own
        quick = resolve_batch(PointBatch(ids, rows, payloads), FieldMap(tenant="tenant"), dim=6)
    # the same values as Python lists take the per-row path (np.asarray of each row)
    slow = resolve_batch(PointBatch(ids, [r.tolist() for r in rows], payloads), FieldMap(tenant="tenant"), dim=6)
    assert quick.vectors.dtype == np.float32 and quick.vectors.shape == (len(rows), 6)
    assert np.array_equal(quick.vectors.view(np.uint32), slow.vectors.view(np.uint32))  # bit for bit, NaN and -0.0
    assert quick.stored_dims.tolist() == slow.stored_dims.tolist() == [6] * len(rows)
    assert quick.vector_hashes == slow.vector_hashes == [vector_hash(v) for v in slow.vectors]
    assert quick.payload_hashes == slow.payload_hashes and quick.tenants == slow.tenants
    assert quick.text_hashes == slow.text_hashes == [None] * len(rows)


def test_pages_the_quick_path_cannot_take_resolve_row_by_row() -> None:
    good = _rows("float32", n=8, dim=3)[:4]
    pages: list[list[Any]] = [
        [*good[:3], np.ones(2, dtype=np.float32)],  # a row of another length
        [*good[:3], None],  # a missing vector
        [*good[:3], good[3].astype(np.float64)],  # two dtypes in one page
        [*good[:3], np.array(["1", "2", "3"])],  # strings
        [*good[:3], np.ones((1, 3), dtype=np.float32)],  # not 1-D
    ]
    for vectors in pages:
        batch = resolve_batch(PointBatch([1, 2, 3, 4], vectors, [{}] * 4), FieldMap(), dim=3)
        assert np.array_equal(batch.vectors[:3], np.stack(good[:3]), equal_nan=True)
        assert batch.vector_hashes[:3] == [vector_hash(v) for v in good[:3]]
    assert resolve_batch(PointBatch([1, 2, 3, 4], pages[0], [{}] * 4), FieldMap(), dim=3).stored_dims.tolist() == [
        3, 3, 3, 2]


def _table_pages(n_pages: int = 9, rows: int = 50, dim: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    pages = [rng.standard_normal((rows, dim)).astype(np.float32) for _ in range(n_pages)]
    pages[1][4] = np.nan
    pages[2][7] = 0.0
    pages[5][0, 3] = -np.inf
    return pages


def _fill(table: PointTable, pages: list[np.ndarray], dim: int) -> None:
    for p, vectors in enumerate(pages):
        rows = len(vectors)
        ids = list(range(p * rows, (p + 1) * rows))
        table.append(resolve_batch(PointBatch(ids, list(vectors), [{}] * rows), FieldMap(), dim=dim))


def test_spill_file_in_chunks_on_a_thread_holds_every_page_in_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr(context, "_SPILL_CHUNK", 3 * 50 * 8 * 4 + 1)  # four pages a chunk, the last one short
    monkeypatch.setattr(context, "_SPILL_PENDING", 1)
    pages = _table_pages()
    table = PointTable(8, spill_dir=tmp_path)
    _fill(table, pages, 8)
    table.seal()
    everything = np.concatenate(pages)
    assert np.array_equal(np.asarray(table.vectors), everything, equal_nan=True)
    # the valid mask computed page by page is the one the sealed table's vectors give
    expected = np.isfinite(everything).all(axis=1) & (np.abs(everything).sum(axis=1) > 0)
    assert table.valid_mask().tolist() == expected.tolist()
    assert (~table.valid_mask()).sum() == 3
    table.close()


def test_pages_larger_than_a_chunk_are_written_between_chunks_in_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr(context, "_SPILL_CHUNK", 2 * 50 * 8 * 4)  # two 50-row pages a chunk; a 120-row page alone
    monkeypatch.setattr(context, "_SPILL_PENDING", 1)
    rng = np.random.default_rng(5)
    pages = [rng.standard_normal((rows, 8)).astype(np.float32) for rows in (50, 120, 50, 50, 50, 120, 120, 50, 7)]
    table = PointTable(8, spill_dir=tmp_path)
    start = 0
    for vectors in pages:
        ids = list(range(start, start + len(vectors)))
        start += len(vectors)
        table.append(resolve_batch(PointBatch(ids, list(vectors), [{}] * len(vectors)), FieldMap(), dim=8))
    table.seal()
    assert np.array_equal(np.asarray(table.vectors), np.concatenate(pages))
    table.close()


def test_a_page_changed_after_append_is_spilled_as_it_was_appended(tmp_path: Any) -> None:
    pages = _table_pages()
    table = PointTable(8, spill_dir=tmp_path)
    batch = resolve_batch(PointBatch(list(range(50)), list(pages[0]), [{}] * 50), FieldMap(), dim=8)
    table.append(batch)
    original = batch.vectors.copy()
    batch.vectors *= 2.0  # a detector normalising its page in place
    table.seal()
    assert np.array_equal(np.asarray(table.vectors), original, equal_nan=True)
    table.close()


def test_a_failed_spill_write_is_raised(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setattr(context, "_SPILL_CHUNK", 1)  # every page its own write
    table = PointTable(8, spill_dir=tmp_path)

    class FullDisk:
        def write(self, data: bytes) -> int:
            raise OSError(28, "No space left on device")

        def close(self) -> None:
            pass

    table._fh = FullDisk()
    with pytest.raises(OSError, match="No space left"):
        _fill(table, _table_pages(), 8)
        table.seal()
    table.close()  # closing after the failure raises nothing more
