"""On a collection's first scan the tenant summaries are computed on a thread beside pass 2 (issue 18 item 0): the
ledger stores the same summaries as when they are computed before pass 2, a scan that has earlier summaries (drift
compares with them) computes them first, and a scan interrupted in pass 2 waits for the thread and ends cleanly."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import run_scan

import auditor.engine as engine
from auditor import summaries
from auditor.errors import ExitCode
from auditor.ledger import Ledger
from auditor.ledger import repository as repo
from auditor.types import FieldMap
from detectors.outliers import OutlierDetector

DETECTORS = ["outlier", "drift"]


def _export(path: Path) -> str:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(900, 16)) + np.repeat(rng.normal(size=(3, 16)) * 3, 300, axis=0)
    with path.open("w") as fh:
        for i, v in enumerate(x):
            fh.write(json.dumps({"id": i, "vector": [round(float(a), 6) for a in v], "tenant": f"t{i // 300}"}) + "\n")
    return f"file://{path}"


def _stored(url: str, scan_id: int) -> dict[str | None, summaries.TenantSummary]:
    ledger = Ledger(url).open()
    try:
        with ledger.session() as s:
            return summaries.load(s, scan_id)
    finally:
        ledger.dispose()


@pytest.fixture
def summarise_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread each ``summarise`` call ran on."""
    names: list[str] = []
    real = summaries.summarise

    def spy(*args: Any, **kwargs: Any) -> Any:
        names.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(summaries, "summarise", spy)
    return names


def test_first_scan_summaries_on_a_thread_equal_those_before_pass_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, summarise_threads: list[str]
) -> None:
    uri = _export(tmp_path / "export.jsonl")
    fields = FieldMap(tenant="tenant")
    beside = run_scan(uri, f"sqlite:///{tmp_path / 'a.db'}", collection="export", detectors=DETECTORS,
                      field_map=fields)
    assert beside.status == "completed"
    assert len(summarise_threads) == 1 and summarise_threads[0].startswith("vecaudit-summaries")
    # the second scan of the same ledger: drift compares with the first scan's summaries, so they come first
    again = run_scan(uri, f"sqlite:///{tmp_path / 'a.db'}", collection="export", detectors=DETECTORS,
                     field_map=fields)
    assert summarise_threads[1] == threading.current_thread().name
    monkeypatch.setattr(engine, "_summaries_beside_pass_two", lambda *_: None)  # as before: ahead of pass 2
    before = run_scan(uri, f"sqlite:///{tmp_path / 'b.db'}", collection="export", detectors=DETECTORS,
                      field_map=fields)
    a, b = _stored(f"sqlite:///{tmp_path / 'a.db'}", beside.scan_id), _stored(f"sqlite:///{tmp_path / 'b.db'}",
                                                                              before.scan_id)
    assert sorted(a, key=str) == sorted(b, key=str) == ["t0", "t1", "t2"]
    for tenant in a:
        assert a[tenant].count == b[tenant].count == 300
        np.testing.assert_array_equal(a[tenant].centroid, b[tenant].centroid)
        np.testing.assert_array_equal(a[tenant].sample, b[tenant].sample)
    assert _stored(f"sqlite:///{tmp_path / 'a.db'}", again.scan_id).keys() == a.keys()
    assert {r.fingerprint for r in beside.findings} == {r.fingerprint for r in before.findings}


def test_a_scan_interrupted_in_pass_two_waits_for_the_summaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, summarise_threads: list[str]
) -> None:
    def interrupted(self: OutlierDetector, ctx: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(OutlierDetector, "finish", interrupted)
    uri = _export(tmp_path / "export.jsonl")
    url = f"sqlite:///{tmp_path / 'c.db'}"
    result = run_scan(uri, url, collection="export", detectors=DETECTORS, field_map=FieldMap(tenant="tenant"))
    assert (result.status, result.error_exit) == ("failed", ExitCode.INTERRUPTED)
    assert len(summarise_threads) == 1
    for thread in threading.enumerate():  # its one job done, the summaries thread ends
        if thread.name.startswith("vecaudit-summaries"):
            thread.join(timeout=10)
            assert not thread.is_alive()
    ledger = Ledger(url).open()
    try:
        with ledger.session() as s:
            assert repo.last_completed_scan(s, 1) is None
    finally:
        ledger.dispose()


def test_a_large_point_table_is_summarised_before_pass_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, summarise_threads: list[str]
) -> None:
    monkeypatch.setattr(engine, "_SUMMARIES_BESIDE_BYTES", 900 * 16 * 4 - 1)  # one byte under this table's vectors
    uri = _export(tmp_path / "export.jsonl")
    url = f"sqlite:///{tmp_path / 'd.db'}"
    result = run_scan(uri, url, collection="export", detectors=DETECTORS, field_map=FieldMap(tenant="tenant"))
    assert result.status == "completed"
    assert summarise_threads == [threading.current_thread().name]
    assert sorted(_stored(url, result.scan_id), key=str) == ["t0", "t1", "t2"]
