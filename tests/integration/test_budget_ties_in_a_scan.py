"""The alert budget on real findings with tied scores: the hub detector's k-occurrence is an integer, so on a store
of real text embedded by the real model its VA331 findings tie by the dozen. A review line that falls inside a tie
must move the whole tie below it, so that the same store with its points listed in another order under other ids —
what another graph or another read order amounts to — gets the same severity for every point."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import load_jsonl
from support import build_qdrant_store, run_scan

from auditor.types import FieldMap, Severity

pytestmark = pytest.mark.slow

HUB = {"z": 1.5, "min_ratio": 1.5}  # many moderate hubs: enough VA331 findings to budget


@pytest.fixture(scope="module")
def stores(embed, tmp_path_factory):  # type: ignore[no-untyped-def]
    # one point per distinct text: the lists of bit-identical copies depend on the order (the graph's, not the
    # budget's, tie)
    names = ("wikipedia_en.jsonl", "pubmed.jsonl", "hotpotqa_retrieved.jsonl", "govuk_sections.jsonl", "emails.jsonl")
    texts = list(dict.fromkeys(r["text"] for name in names for r in load_jsonl(name)))
    vectors = embed(texts)
    n = len(texts)
    order = np.random.default_rng(7).permutation(n)
    base = tmp_path_factory.mktemp("ties")
    straight = build_qdrant_store(base / "a", vectors, [{"row": i} for i in range(n)])
    # the same points in another order under other ids (reversed ranking of the ids)
    shuffled = build_qdrant_store(base / "b", vectors[order], [{"row": int(i)} for i in order],
                                  ids=[int(n - 1 - j) for j in range(n)])
    return straight, shuffled, n


def _scan(uri: str, ledger: str, **params: object):  # type: ignore[no-untyped-def]
    return run_scan(uri, ledger, detectors=["hub"], field_map=FieldMap(), params={"hub": {**HUB, **params}})


def _severity_by_row(result, uri_row) -> dict[int, tuple[float, Severity]]:  # type: ignore[no-untyped-def]
    return {uri_row(r.finding.point_id): (round(r.finding.score, 9), r.finding.effective_severity)
            for r in result.findings if r.finding.rule.id == "VA331"}


def test_a_tie_at_the_review_line_moves_whole_and_the_order_of_points_does_not_matter(  # type: ignore[no-untyped-def]
    stores, tmp_path: Path
) -> None:
    straight, shuffled, n = stores
    loose = _scan(straight, f"sqlite:///{tmp_path / 'loose.db'}", alert_budget=1.0, review_budget=1.0)
    scores = sorted((r.finding.score for r in loose.findings if r.finding.rule.id == "VA331"), reverse=True)
    ties = Counter(round(s, 9) for s in scores)
    assert len(scores) >= 30 and max(ties.values()) >= 3, ties  # integer k-occurrence: real ties
    # a review line through the middle of the largest tie below the strongest score
    score, size = max(((s, c) for s, c in ties.items() if s < scores[0]), key=lambda sc: sc[1])
    above = sum(1 for s in scores if round(s, 9) > score)
    slots = above + size // 2 + (size == 1)
    tight = {"alert_floors": {"VA331": 1e9, "VA333": 1e9}, "alert_budget": 0.0, "review_budget": slots / n}

    a = _scan(straight, f"sqlite:///{tmp_path / 'a.db'}", **tight)
    rows_b = {n - 1 - j: None for j in range(n)}  # id -> original row in the shuffled store
    order = np.random.default_rng(7).permutation(n)
    for j, row in enumerate(order):
        rows_b[n - 1 - j] = int(row)
    b = _scan(shuffled, f"sqlite:///{tmp_path / 'b.db'}", **tight)
    found_a = _severity_by_row(a, int)
    found_b = _severity_by_row(b, lambda pid: rows_b[int(pid)])

    assert found_a == found_b  # every point: the same score and the same severity
    by_score: dict[float, set[Severity]] = defaultdict(set)
    for s, sev in found_a.values():
        by_score[s].add(sev)
    assert all(len(sevs) == 1 for sevs in by_score.values())  # a tie is never split
    assert by_score[score] == {Severity.INFO}  # the straddling tie went below the line, whole
    low = sum(sev is Severity.LOW for _, sev in found_a.values())
    assert low == above <= slots  # the budget is kept: everything stronger than the tie, nothing more
    note = next(x for x in a.notes if x.startswith("alert budget: hub"))
    assert f"{size} tied at the review line kept below it" in note, note
