"""The ledger on SQLite and a real PostgreSQL server: migrations, schema checks, scans, migrations from a wheel."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import load_jsonl
from support import build_qdrant_store, run_scan

from auditor.cli.main import cli
from auditor.errors import LedgerError
from auditor.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory, embed: Any) -> str:
    rows = load_jsonl("pubmed.jsonl")[:40]
    payloads = [{"text": r["text"], "tenant": "globex"} for r in rows]
    payloads[0] = {"tenant": "globex"}
    return build_qdrant_store(tmp_path_factory.mktemp("pg") / "store", embed([r["text"] for r in rows]), payloads)


@pytest.mark.postgres
def test_empty_postgres_ledger_exits_4_until_upgraded(fresh_postgres_db: str, small_store: str) -> None:
    runner = CliRunner()
    scan = ["scan", small_store, "--collection", "docs", "--text-field", "text", "--ledger", fresh_postgres_db]
    refused = runner.invoke(cli, scan)
    assert refused.exit_code == 4
    assert "vecaudit db upgrade" in refused.output and "Traceback" not in refused.output
    assert runner.invoke(cli, ["db", "check", "--ledger", fresh_postgres_db]).exit_code == 4
    upgraded = runner.invoke(cli, ["db", "upgrade", "--ledger", fresh_postgres_db])
    assert upgraded.exit_code == 0, upgraded.output
    assert runner.invoke(cli, ["db", "check", "--ledger", fresh_postgres_db]).exit_code == 0
    assert "current: 0" in runner.invoke(cli, ["db", "current", "--ledger", fresh_postgres_db]).output
    done = runner.invoke(cli, [*scan, "--format", "json", "-d", "integrity", "--fail-on", "critical"])
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["scan"]["points_scanned"] == 40
    assert [(f["rule_id"], f["point_id"]) for f in doc["findings"]] == [("VA107", 0)]
    # the finding's review status and times survive a round trip through PostgreSQL
    listed = runner.invoke(cli, ["findings", "list", "--ledger", fresh_postgres_db, "--format", "json"])
    assert json.loads(listed.stdout)["findings"][0]["first_seen_at"].endswith("+00:00")


@pytest.mark.postgres
def test_unreachable_postgres_exits_4() -> None:
    result = CliRunner().invoke(cli, ["findings", "list", "--ledger", "postgresql+psycopg://x@127.0.0.1:1/none"])
    assert result.exit_code == 4 and "unreachable" in result.output


def test_sqlite_ledger_behind_head_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    ledger = Ledger(url)
    ledger.upgrade("base")  # creates the file and the version table, at no revision
    ledger.dispose()
    with pytest.raises(LedgerError, match="db upgrade"):
        Ledger(url).open()


def test_fresh_sqlite_ledger_is_created_and_reused(tmp_path: Path, small_store: str) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    first = run_scan(small_store, url, detectors=["integrity"])
    second = run_scan(small_store, url, detectors=["integrity"])
    assert (first.scan_id, second.scan_id) == (1, 2)
    assert second.counts["baseline"] is False and second.counts["new"] == 0
    assert [r.is_new for r in second.findings] == [False]  # the same identity, not a new finding


def test_migrations_run_from_an_installed_wheel(tmp_path: Path) -> None:
    """Build the wheel, unpack it, and migrate a ledger with the packaged Alembic scripts only."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("vecaudit-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(site)
    assert "migrations/env.py" in names and any(n.startswith("migrations/versions/0001") for n in names)
    assert "auditor/demo_data/corpus.jsonl" in names
    db = tmp_path / "wheel.db"
    code = (
        "import migrations, auditor\n"
        f"assert migrations.__file__.startswith({str(site)!r}), migrations.__file__\n"
        "from auditor.ledger import Ledger\n"
        f"l = Ledger('sqlite:///{db}'); l.upgrade(); print(l.current_revision())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": ""},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == Ledger(f"sqlite:///{db}").head_revision()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_upgrade_to_0003_keeps_every_row_and_allows_abandoned(
    backend: str, small_store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A ledger at 0002 with a recorded scan is upgraded in place (SQLite re-creates the referenced scans
    table): rows and references survive, 'abandoned' becomes a valid status, and a downgrade maps it back."""
    from alembic import command
    from sqlalchemy import func, select, text

    from auditor.engine import Scanner, ScanOptions
    from auditor.ledger.models import FindingRow, PointVersionRow, ScanRow
    from auditor.ledger.session import alembic_config
    from auditor.registry import connector_for
    from auditor.types import FieldMap
    from detectors.integrity import IntegrityDetector

    url = f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite" else request.getfixturevalue("fresh_postgres_db")
    ledger = Ledger(url)
    ledger.upgrade("0002")
    connector = connector_for(small_store, collection="docs")
    with connector:  # recorded by today's engine into the 0002 schema (Ledger.open() would refuse it)
        Scanner(ledger, connector, [IntegrityDetector()], ScanOptions(field_map=FieldMap(text="text"),
                                                                      show_progress=False)).run()
    ledger.upgrade()
    assert ledger.current_revision() == ledger.head_revision() == "0004"
    with ledger.session() as s:
        assert s.scalar(select(func.count()).select_from(PointVersionRow)) == 40
        assert s.scalar(select(func.count()).select_from(FindingRow)) == 1
        scan = s.get(ScanRow, 1)
        assert scan is not None and scan.status == "completed"
        scan.status = "abandoned"
        if backend == "sqlite":
            assert s.execute(text("PRAGMA foreign_key_check")).all() == []
            assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1  # enforcement is back after migrating
    with ledger.engine.begin() as conn:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    with ledger.session() as s:
        assert s.get(ScanRow, 1).status == "failed"  # type: ignore[union-attr]
    ledger.dispose()
