"""A whole scan on the IVF graph (issue 18 item 0): the collection graph and the tenant lists of round-robin tenants
come from coarse cells, and the outlier findings (rule, point, severity) agree with those of exact graphs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import run_scan

import auditor.graph as graph
from auditor.types import FieldMap


def _export(path: Path) -> tuple[str, set[int]]:
    """2,400 clustered 64-d unit vectors in four round-robin tenants, twelve of them planted off-cluster."""
    rng = np.random.default_rng(7)
    n, dim = 2_400, 64
    centres = rng.normal(size=(n // 60, dim))
    x = centres[rng.integers(0, len(centres), n)] + 0.45 * rng.normal(size=(n, dim))
    planted = rng.choice(n, 12, replace=False)
    x[planted] = rng.normal(size=(len(planted), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": i, "vector": [round(float(v), 6) for v in x[i]], "tenant": f"t{i % 4}"}) + "\n")
    return f"file://{path}", {int(p) for p in planted}


def _answers(result: Any) -> set[tuple[str, Any, str]]:
    return {(r.finding.rule_id, r.finding.point_id, str(r.finding.effective_severity)) for r in result.findings}


def test_ivf_scan_agrees_with_exact_graphs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri, planted = _export(tmp_path / "export.jsonl")
    fields = FieldMap(tenant="tenant")
    exact = run_scan(uri, f"sqlite:///{tmp_path / 'a.db'}", collection="export", detectors=["outlier"],
                     field_map=fields)
    assert "graph.all" in exact.counts["seconds"] and "graph.tenant_ivf" not in exact.counts["seconds"]
    monkeypatch.setattr(graph, "EXACT_LIMIT", 500)  # the collection graph and 600-point tenants go approximate
    monkeypatch.setattr(graph, "IVF_CELL_POINTS", 64)
    ivf = run_scan(uri, f"sqlite:///{tmp_path / 'b.db'}", collection="export", detectors=["outlier"],
                   field_map=fields)
    assert "graph.tenant_ivf" in ivf.counts["seconds"]  # round-robin tenants: searched through the cells
    assert any("coarse cells (IVF, spread" in note for note in ivf.notes), ivf.notes
    assert not any(key.startswith("graph.sub:") for key in ivf.counts["seconds"])  # no tenant graph of its own
    a, b = _answers(exact), _answers(ivf)
    assert {p for r, p, _ in a if r == "VA301"} >= planted and {p for r, p, _ in b if r == "VA301"} >= planted
    assert len(a & b) >= 0.95 * len(a | b)
    for result in (exact, ivf):
        graph_exact = {r.finding.evidence["graph_exact"] for r in result.findings}
        assert graph_exact == ({True} if result is exact else {False})
