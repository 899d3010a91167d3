"""`vecaudit demo` end to end: builds the store from the shipped real text, plants attacks, finds them."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditor.cli.main import cli


def test_demo_finds_integrity_and_tampering_and_writes_a_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("VECAUDIT_QUARANTINE_KEY", "VECAUDIT_QUARANTINE_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    target = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "--dir", str(target)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "next steps:" in result.stdout
    assert (target / "report.html").stat().st_size > 10_000
    report = json.loads((target / "findings.json").read_text())
    rules = {(f["rule_id"], f["point_id"]) for f in report["findings"]}
    by_rule = {r for r, _ in rules}
    assert {"VA102", "VA104", "VA105", "VA108", "VA201"} <= by_rule
    assert report["scan"]["counts"]["baseline"] is False
    # the quarantined poisons' ledger backups are encrypted with a key the demo made (owner-only file)
    key_file = target / "quarantine.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "VECAUDIT_QUARANTINE_KEY_FILE" in result.stdout
    with sqlite3.connect(target / "ledger.db") as db:
        backups = [json.loads(b) for (b,) in db.execute("select backup from quarantine_actions")]
    assert backups and all(b["format"] == 2 and "fernet" in b and "payload" not in b for b in backups)
    # the demo refuses to delete a folder it did not make
    other = tmp_path / "mine"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    refused = CliRunner().invoke(cli, ["demo", "--dir", str(other)])
    assert refused.exit_code == 2 and (other / "precious.txt").exists()
