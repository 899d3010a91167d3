"""The scan's JSON document reads its findings and their latest occurrences in bulk (two SELECTs per 500 findings,
not two per finding) and lists exactly what the per-finding reads gave, on a second scan of the same ledger too."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from support import run_scan

from auditor.cli.output import finding_json
from auditor.cli.scan import scan_document
from auditor.engine import ScanResult
from auditor.ledger import Ledger
from auditor.ledger import repository as repo
from auditor.ledger.models import FindingRow
from auditor.types import FieldMap


def _export(path: Path) -> str:
    """1,200 clustered 32-d unit vectors in three tenants, 30 of them planted off-cluster (outlier findings)."""
    rng = np.random.default_rng(11)
    n, dim = 1_200, 32
    centres = rng.normal(size=(n // 40, dim))
    x = centres[rng.integers(0, len(centres), n)] + 0.4 * rng.normal(size=(n, dim))
    x[rng.choice(n, 30, replace=False)] = rng.normal(size=(30, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": i, "vector": [round(float(v), 6) for v in x[i]], "tenant": f"t{i % 3}"}) + "\n")
    return f"file://{path}"


@pytest.fixture
def selects() -> Iterator[Counter[str]]:
    """SELECT statements sent to any database, by the table they read first."""
    seen: Counter[str] = Counter()

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        words = statement.split()
        if words and words[0].upper() == "SELECT":
            seen[words[words.index("FROM") + 1] if "FROM" in words else "?"] += 1

    event.listen(Engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", count)


def _one_by_one(ledger: Ledger, result: ScanResult) -> list[dict[str, Any]]:
    """The findings of the document as the per-finding reads (``Session.get``, ``latest_occurrence``) give them."""
    with ledger.session() as s:
        out = []
        for rec in result.findings:
            row = s.get(FindingRow, rec.row_id)
            assert row is not None
            out.append(finding_json(row, repo.latest_occurrence(s, rec.row_id, result.scan_id), collection="export"))
        return out


def test_scan_document_reads_in_bulk_and_lists_the_same_findings(
    tmp_path: Path, selects: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repo, "_IN_CHUNK", 7)  # a few dozen findings cross several IN lists
    uri = _export(tmp_path / "export.jsonl")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    fields = FieldMap(tenant="tenant")
    run_scan(uri, url, collection="export", detectors=["outlier", "near-duplicate", "hub"], field_map=fields)
    # the second scan: every finding has two occurrences, the document shows this scan's
    second = run_scan(uri, url, collection="export", detectors=["outlier", "near-duplicate", "hub"], field_map=fields)
    n = len(second.findings)
    assert n >= 20, f"the export should give findings in several chunks, got {n}"
    ledger = Ledger(url).open()
    try:
        selects.clear()
        doc = scan_document(ledger, second)
        chunks = -(-n // 7)
        assert selects["findings"] <= chunks and selects["finding_occurrences"] <= chunks, selects
        want = _one_by_one(ledger, second)
        with ledger.session() as s:
            # without a scan: the latest of the two occurrences, which is the second scan's
            latest = repo.latest_occurrences(s, [r.row_id for r in second.findings])
            assert {occ.scan_id for occ in latest.values()} == {second.scan_id} and len(latest) == n
            assert repo.latest_occurrences(s, [10**9]) == {} and repo.findings_by_id(s, [10**9]) == {}
    finally:
        ledger.dispose()
    got = [{k: v for k, v in f.items() if k not in ("is_new", "alert", "alert_reason")} for f in doc["findings"]]
    assert got == want
    assert [f["id"] for f in doc["findings"]] == [r.row_id for r in second.findings]
    assert all(not f["is_new"] for f in doc["findings"])
