"""Two applies racing on one finding never double-apply; a store that refuses writes leaves a clear error
and a ledger that says nothing was applied (real read-only files, and a permission-denied server key)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from quarantine_support import (
    NO_TENANT,
    POISONS,
    assert_quarantined,
    assert_restored,
    build_case,
    case,
    case_template,
    findings_of,
    run_cli,
    snapshot,
)
from sqlalchemy import update

from auditor.connector import SourceURI
from auditor.errors import ConnectorError
from auditor.ledger import Ledger
from auditor.ledger.models import QuarantineActionRow
from auditor.quarantine import Outcome, Quarantine, Selection, list_actions, new_lock_token, plan
from auditor.types import PointId, StoredPoint
from connectors.qdrant import QdrantConnector

__all__ = ["case", "case_template"]  # fixtures


def race(case: Any, client: Any, finding_id: int, runs: int = 2) -> list[Outcome]:
    """``runs`` threads, each with its own ledger engine, apply the same finding at the same moment."""
    barrier = threading.Barrier(runs)
    results: list[Outcome] = []
    errors: list[BaseException] = []

    def factory(coll: Any) -> QdrantConnector:
        barrier.wait(timeout=30)  # everyone reaches the claim together
        return QdrantConnector(SourceURI.parse(case.uri), collection=coll.name, client=client)

    def one() -> None:
        ledger = Ledger(case.ledger_url).open()
        try:
            runner = Quarantine(ledger, actor=threading.current_thread().name, connector_factory=factory)
            results.extend(runner.apply(plan(ledger, Selection(finding_ids=[finding_id]))))
        except BaseException as e:  # surfaced below
            errors.append(e)
        finally:
            ledger.dispose()

    threads = [threading.Thread(target=one, name=f"run{i}") for i in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def test_concurrent_applies_on_one_finding_apply_once(case: Any) -> None:
    from qdrant_client import QdrantClient

    fid = case.confirmed[NO_TENANT]
    client = QdrantClient(path=str(case.path))
    ledger = Ledger(case.ledger_url).open()
    try:
        for round_ in range(4):
            outcomes = race(case, client, fid)
            states = sorted(o.state for o in outcomes)
            assert states == ["applied", "skipped"], (round_, outcomes)
            applied = [a for a in list_actions(ledger) if a.state == "applied"]
            assert len(applied) == 1
            flag = (client.retrieve("docs", [NO_TENANT])[0].payload or {})["vecaudit_quarantine"]
            assert flag["action_id"] == applied[0].id
            runner = Quarantine(
                ledger,
                connector_factory=lambda c: QdrantConnector(
                    SourceURI.parse(case.uri), collection=c.name, client=client
                ),
            )
            assert runner.release([applied[0].id])[0].state == "released"
    finally:
        client.close()
        ledger.dispose()


@pytest.mark.postgres
def test_race_and_round_trip_on_a_postgresql_ledger(tmp_path: Path, embed: Any, fresh_postgres_db: str) -> None:
    """The same guarantees with the production ledger: the conditional UPDATE blocks on PostgreSQL's row lock."""
    from qdrant_client import QdrantClient

    pg_case = build_case(tmp_path, embed, ledger_url=fresh_postgres_db)
    client = QdrantClient(path=str(pg_case.path))

    def shared(c: Any) -> QdrantConnector:
        return QdrantConnector(SourceURI.parse(pg_case.uri), collection=c.name, client=client)

    ledger = Ledger(pg_case.ledger_url).open()
    try:
        for round_ in range(3):
            outcomes = race(pg_case, client, pg_case.confirmed[NO_TENANT], runs=3)
            assert sorted(o.state for o in outcomes) == ["applied", "skipped", "skipped"], (round_, outcomes)
            (applied,) = list_actions(ledger, states=["applied"])
            if round_ < 2:
                assert Quarantine(ledger, connector_factory=shared).release([applied.id])[0].state == "released"
    finally:
        client.close()
        ledger.dispose()
    ledger = Ledger(pg_case.ledger_url).open()
    runner = Quarantine(ledger, actor="alice")
    rest = [pg_case.confirmed[p] for p in POISONS if p != NO_TENANT]
    assert all(o.state == "applied" for o in runner.apply(plan(ledger, Selection(finding_ids=rest))))
    assert_quarantined(pg_case.uri, pg_case.original, POISONS, "tag")
    assert all(o.state == "released" for o in runner.release([a.id for a in list_actions(ledger, states=["applied"])]))
    assert_restored(pg_case.uri, pg_case.original)
    ledger.dispose()


def test_an_action_held_by_a_live_run_is_left_alone_and_a_dead_runs_is_taken_over(case: Any) -> None:
    ledger = Ledger(case.ledger_url).open()
    fid = case.confirmed[NO_TENANT]
    runner = Quarantine(ledger, actor="alice")
    with ledger.session() as s:
        row = QuarantineActionRow(
            collection_id=1, point_key=str(NO_TENANT), mode="tag", state="planned", finding_ids=[fid],
            flag_field="vecaudit_quarantine", actor="other", lock_token=new_lock_token(),
        )  # fmt: skip
        s.add(row)
        s.flush()
        held = row.id
    (busy,) = runner.apply(plan(ledger, Selection(finding_ids=[fid])))
    assert busy.state == "skipped" and f"action {held} is in progress" in busy.message
    assert snapshot(case.uri) == case.original
    with ledger.session() as s:
        s.execute(update(QuarantineActionRow).values(lock_token="deadbeef0000:4242:0:elsewhere"))  # lease long over
    (taken,) = runner.apply(plan(ledger, Selection(finding_ids=[fid])))
    assert taken.action_id == held and taken.state == "applied"
    assert len(list_actions(ledger)) == 1
    ledger.dispose()


@contextmanager
def immutable(paths: Sequence[Path]) -> Iterator[None]:
    """Make files/folders immutable (``chattr +i``): even root cannot write them, like a read-only store."""
    done: list[Path] = []
    try:
        for p in paths:
            proc = subprocess.run(["chattr", "+i", str(p)], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                pytest.skip(f"chattr +i not permitted here: {proc.stderr.strip()}")
            done.append(p)
        yield
    finally:
        for p in done:
            subprocess.run(["chattr", "-i", str(p)], check=False)


@pytest.mark.parametrize("mode", ["tag", "move"])
def test_read_only_store_gives_clear_error_and_nothing_applied(case: Any, mode: str) -> None:
    store = case.path
    paths = [store / "collection" / "docs" / "storage.sqlite", store / "collection", store / "meta.json"]
    fids = [str(f) for f in case.confirmed.values()]
    with immutable(paths):
        proc = run_cli(["quarantine", "apply", *fids, "--mode", mode, "--yes", "--ledger", case.ledger_url])
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "store refused the write" in proc.stderr, proc.stderr
    assert "readonly database" in proc.stderr or "Operation not permitted" in proc.stderr, proc.stderr
    assert "nothing applied" in proc.stderr
    assert snapshot(case.uri)["docs"] == case.original["docs"]
    ledger = Ledger(case.ledger_url).open()
    actions = list_actions(ledger)
    assert actions and all(a.state == "failed" and a.applied_at is None for a in actions)
    assert all("refused" in (a.error or "") for a in actions)
    ledger.dispose()
    assert all(r.status != "quarantined" for p in POISONS for r in findings_of(case.ledger_url, p))


class ForbiddenWrites(QdrantConnector):
    """A Qdrant connector whose key may read the live collection but not write it (a server answers 403);
    like a JWT scoped per collection, writes to the quarantine collection are allowed."""

    refuse: frozenset[str] = frozenset({"set_payload", "upsert_points", "delete_points"})

    def _deny(self, op: str, collection: str | None = None) -> None:
        if op in self.refuse and collection in (None, self.collection):
            raise ConnectorError(
                f"{op} refused on {self.where}: 403 Forbidden",
                hint="the API key in QDRANT_API_KEY lacks permission for this operation",
            )

    def set_payload(self, ids: Sequence[PointId], payload: Any, *, collection: str | None = None) -> None:
        self._deny("set_payload", collection)
        super().set_payload(ids, payload, collection=collection)

    def upsert_points(self, points: Sequence[StoredPoint], *, collection: str | None = None) -> None:
        self._deny("upsert_points", collection)
        super().upsert_points(points, collection=collection)

    def delete_points(self, ids: Sequence[PointId], *, collection: str | None = None) -> None:
        self._deny("delete_points", collection)
        super().delete_points(ids, collection=collection)


@pytest.mark.parametrize(("mode", "refused"), [("tag", {"set_payload"}), ("move", {"delete_points"})])
def test_permission_denied_write_is_undone_and_recorded(case: Any, mode: str, refused: set[str]) -> None:
    """In move mode the copy succeeds and the delete is refused: the copy is removed again."""

    def factory(coll: Any) -> QdrantConnector:
        conn = ForbiddenWrites(SourceURI.parse(case.uri), collection=coll.name)
        conn.refuse = frozenset(refused)
        return conn

    ledger = Ledger(case.ledger_url).open()
    runner = Quarantine(ledger, connector_factory=factory)
    outcomes = runner.apply(plan(ledger, Selection(finding_ids=list(case.confirmed.values())), mode=mode))
    assert [o.state for o in outcomes] == ["failed"] * 3
    assert all("403 Forbidden" in o.message and "nothing applied" in o.message for o in outcomes)
    now = snapshot(case.uri)
    assert now["docs"] == case.original["docs"]
    assert not now.get("docs__quarantine")
    assert {a.state for a in list_actions(ledger)} == {"failed"}
    ledger.dispose()
