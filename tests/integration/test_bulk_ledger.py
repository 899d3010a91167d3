"""The ledger writes a scan's findings in bulk (multi-row INSERT / executemany per chunk, not one statement per
finding) on SQLite and on a real PostgreSQL server, with the same rows, stages and review statuses as before."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from support import build_qdrant_store, load_jsonl, run_scan

from auditor.cli.main import cli
from auditor.findings import point_key
from auditor.ledger import Ledger
from auditor.ledger import repository as repo
from auditor.ledger.models import FindingOccurrenceRow, FindingRow, PointVersionRow, ScanRow

#: rows per bulk statement in these tests: small, so a few dozen findings cross many chunks
CHUNK = 3


@pytest.fixture(scope="module")
def tenant_store(tmp_path_factory: pytest.TempPathFactory, embed: Any) -> str:
    """260 real passages in three tenants (wikipedia, pubmed, e-mails), a few injections filed under wikipedia."""
    parts = [("wiki", load_jsonl("wikipedia_en.jsonl")[:120]), ("med", load_jsonl("pubmed.jsonl")[:80]),
             ("mail", load_jsonl("emails.jsonl")[:50]), ("wiki", load_jsonl("injections_bipia.jsonl")[:10])]
    texts = [r["text"] for _, rows in parts for r in rows]
    tenants = [t for t, rows in parts for _ in rows]
    payloads = [{"text": text, "tenant": tenant} for text, tenant in zip(texts, tenants, strict=True)]
    return build_qdrant_store(tmp_path_factory.mktemp("bulk") / "store", embed(texts), payloads)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_ledger_url"))
    url = str(request.getfixturevalue("fresh_postgres_db"))
    upgraded = CliRunner().invoke(cli, ["db", "upgrade", "--ledger", url])
    assert upgraded.exit_code == 0, upgraded.output
    return url


@pytest.fixture
def statements() -> Iterator[Counter[str]]:
    """Counts the SQL statements sent to any database, by their first words (``INSERT INTO findings``)."""
    seen: Counter[str] = Counter()

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen[" ".join(statement.split()[:3]).lower()] += 1

    event.listen(Engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", count)


def _rows(url: str) -> tuple[list[FindingRow], list[FindingOccurrenceRow], list[PointVersionRow]]:
    ledger = Ledger(url).open()
    try:
        with ledger.session() as s:
            findings = list(s.scalars(select(FindingRow).order_by(FindingRow.id)))
            occurrences = list(s.scalars(select(FindingOccurrenceRow).order_by(FindingOccurrenceRow.id)))
            versions = list(s.scalars(select(PointVersionRow).order_by(PointVersionRow.id)))
            s.expunge_all()
            return findings, occurrences, versions
    finally:
        ledger.dispose()


def test_scans_write_findings_in_bulk_with_the_same_rows(
    tenant_store: str, ledger_url: str, statements: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repo, "_BULK_ROWS", CHUNK)
    first = run_scan(tenant_store, ledger_url)
    n = len(first.findings)
    assert n >= 4 * CHUNK, f"the store should give findings to write in several chunks, got {n}"
    chunks = -(-n // CHUNK)
    # one statement per chunk (row by row would be n of each)
    assert statements["insert into findings"] <= chunks
    assert statements["insert into finding_occurrences"] <= chunks
    findings, occurrences, versions = _rows(ledger_url)
    # point versions go straight to the driver: the same rows, UTC times that read back timezone-aware
    assert len(versions) == first.points_scanned == 260
    assert Counter(v.tenant for v in versions) == {"wiki": 130, "med": 80, "mail": 50}
    assert {v.point_key for v in versions} == {point_key(i) for i in range(260)}
    assert all(v.change == "new" and v.scan_id == first.scan_id and v.vector_hash and v.payload_hash for v in versions)
    assert all(v.recorded_at.utcoffset() == timedelta(0) for v in versions)
    assert abs(versions[0].recorded_at - datetime.now(UTC)) < timedelta(hours=1)
    assert len(findings) == len(occurrences) == n
    assert {f.fingerprint for f in findings} == {r.fingerprint for r in first.findings}
    assert {r.row_id for r in first.findings} == {f.id for f in findings}
    assert all(r.is_new and r.status == "open" and r.previous_severity is None for r in first.findings)
    by_id = {f.id: f for f in findings}
    for occ in occurrences:
        finding = by_id[occ.finding_id]
        assert occ.scan_id == first.scan_id and finding.first_scan_id == finding.last_scan_id == first.scan_id
        # text rules found while reading (VA5xx injection) are "observe", graph rules (VA3xx, VA4xx) "finish"
        assert occ.stage in ("observe", "finish")
        if finding.rule_id.startswith(("VA3", "VA4", "VA5")):
            assert occ.stage == ("observe" if finding.rule_id.startswith("VA5") else "finish"), finding.rule_id
    recorded = {r.row_id: r for r in first.findings}
    assert all(by_id[i].severity == r.finding.effective_severity.value for i, r in recorded.items())
    assert {f.rule_id for f in findings} & {"VA301", "VA302", "VA311", "VA331", "VA421"}, "no graph finding"

    # a human verdict sticks, a resolved finding that recurs reopens; the rescan updates in bulk
    reviewed, resolved = findings[0], findings[1]
    ledger = Ledger(ledger_url).open()
    try:
        with ledger.session() as s:
            repo.add_review(s, finding_id=reviewed.id, reviewer="ana", verdict="false_positive", note=None)
            row = s.get(FindingRow, resolved.id)
            assert row is not None
            row.status = "resolved"
    finally:
        ledger.dispose()
    statements.clear()
    second = run_scan(tenant_store, ledger_url)
    assert statements["insert into findings"] == 0
    assert statements["update findings set"] <= chunks + 1  # + the one that resolves findings absent this time
    assert statements["insert into finding_occurrences"] <= chunks
    assert {r.fingerprint for r in second.findings} == {r.fingerprint for r in first.findings}
    assert not any(r.is_new for r in second.findings)
    assert (second.counts["new"], second.counts["changed"], second.counts["deleted"]) == (0, 0, 0)
    status = {r.row_id: r.status for r in second.findings}
    assert status[reviewed.id] == "false_positive" and status[resolved.id] == "open"
    findings, occurrences, versions = _rows(ledger_url)
    assert len(findings) == n and len(occurrences) == 2 * n and len(versions) == 260
    assert all(f.first_scan_id == first.scan_id and f.last_scan_id == second.scan_id for f in findings)
    assert {f.id: f.status for f in findings} == {i: ("open" if i != reviewed.id else "false_positive")
                                                  for i in status}


def test_a_fingerprint_twice_in_one_scan_keeps_its_first_occurrence(tenant_store: str, sqlite_ledger_url: str) -> None:
    result = run_scan(tenant_store, sqlite_ledger_url)
    findings = [r.finding for r in result.findings][:3]
    assert len(findings) == 3
    ledger = Ledger(sqlite_ledger_url).open()
    try:
        with ledger.session() as s:
            scan_id = result.scan_id + 1
            s.add(ScanRow(id=scan_id, collection_id=1, source="x", collection_name="docs", status="running",
                          operator="t", tool_version="t", field_map={}, detector_configs=[], collection_info={},
                          counts={}, notes=[], incremental=False))
            s.flush()
            items = [(findings[0], "fp-a"), (findings[1], "fp-a"), (findings[2], "fp-b")]
            recorded = repo.record_findings(s, collection_id=1, scan_id=scan_id, items=items,
                                            stages=["finish", "observe", "observe"])
            assert [(r.fingerprint, r.finding is findings[i]) for i, r in zip((0, 2), recorded, strict=True)] == [
                ("fp-a", True), ("fp-b", True)]
            occ = {o.finding_id: o for o in s.scalars(
                select(FindingOccurrenceRow).where(FindingOccurrenceRow.scan_id == scan_id))}
            assert len(occ) == 2
            assert occ[recorded[0].row_id].stage == "finish" and occ[recorded[1].row_id].stage == "observe"
            assert occ[recorded[0].row_id].score == pytest.approx(findings[0].score)
    finally:
        ledger.dispose()
