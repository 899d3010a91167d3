"""Quarantine backups never put a readable secret into the ledger: with ``VECAUDIT_QUARANTINE_KEY`` every backup is
encrypted; without it a point holding a secret or personal data is refused before anything changes; a missing or
wrong key stops release and recover with one line; ``--purge-backup`` erases the backup once the release is
verified. The ledger is checked as bytes on disk, not only through the API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from canaries import Planted, canary
from click.testing import CliRunner
from conftest import load_jsonl
from quarantine_support import Snapshot, Template, backup_key, fresh_copy, keep_pristine, snapshot
from sqlalchemy import update
from support import build_qdrant_store, run_scan

from auditor.backupcrypt import KEY_ENV, KEY_FILE_ENV, new_key
from auditor.cli.main import cli
from auditor.ledger import Ledger
from auditor.ledger import repository as repo
from auditor.ledger.models import QuarantineActionRow
from auditor.quarantine import list_actions
from auditor.types import FieldMap

__all__ = ["backup_key"]  # fixture

SECRETS = 20  # text with an AWS key id, a GitHub token, a private key and a password (secrets findings)
PERSONAL = 21  # text with an e-mail address and a US phone number (pii findings)
HIDDEN = 22  # clean text, no tenant (VA108); a Slack token in a payload field the scan does not audit
PLAIN = 23  # clean text, no tenant (VA108): nothing sensitive anywhere
IN_TEXT = ("aws_key_id", "github", "private_key", "config_password")


@dataclass
class SecretCase:
    uri: str
    path: Path
    ledger_url: str
    ledger_file: Path
    findings: dict[int, int]  # point id -> its confirmed finding
    planted: list[Planted]
    original: Snapshot


def build_secret_case(work: Path, embed: Any) -> SecretCase:
    rows = load_jsonl("hotpotqa_retrieved.jsonl")[:24]
    payloads: list[dict[str, Any]] = [{"text": r["text"], "tenant": "acme"} for r in rows]
    in_text = [canary(kind) for kind in IN_TEXT]
    personal = [canary("email"), canary("phone_us")]
    hidden = canary("slack_token")
    payloads[SECRETS]["text"] += " " + " ".join(p.fragment for p in in_text)
    payloads[PERSONAL]["text"] += " " + " ".join(p.fragment for p in personal)
    del payloads[HIDDEN]["tenant"], payloads[PLAIN]["tenant"]
    payloads[HIDDEN]["notes"] = f"ops: {hidden.fragment}"
    uri = build_qdrant_store(work / "store", embed([p["text"] for p in payloads]), payloads)
    ledger_file = work / "ledger.db"
    ledger_url = f"sqlite:///{ledger_file}"
    result = run_scan(uri, ledger_url, detectors=["secrets", "pii", "integrity"],
                      field_map=FieldMap(text="text", tenant="tenant"))
    assert result.status == "completed", result.error
    wanted = {SECRETS: "secrets", PERSONAL: "pii", HIDDEN: "integrity", PLAIN: "integrity"}
    findings: dict[int, int] = {}
    for rec in result.findings:
        pid = rec.finding.point_id
        if isinstance(pid, int) and wanted.get(pid) == rec.finding.detector and pid not in findings:
            findings[pid] = rec.row_id
    assert set(findings) == set(wanted), findings
    ledger = Ledger(ledger_url).open()
    with ledger.session() as s:
        for fid in findings.values():
            repo.add_review(s, finding_id=fid, reviewer="alice", verdict="confirmed", note=None)
    ledger.dispose()
    return SecretCase(uri, work / "store", ledger_url, ledger_file, findings, [*in_text, *personal, hidden],
                      snapshot(uri))


@pytest.fixture(scope="module")
def secret_template(tmp_path_factory: pytest.TempPathFactory, embed: Any) -> Template[SecretCase]:
    return keep_pristine(tmp_path_factory, "secrets", lambda work: build_secret_case(work, embed))


@pytest.fixture
def sc(secret_template: Template[SecretCase]) -> SecretCase:
    return fresh_copy(secret_template)


def run(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line(result: Any, code: int, *needles: str) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    assert "Traceback" not in result.output
    return str(lines[0])


def leaks(sc: SecretCase, haystack: str) -> list[str]:
    return [leak for p in sc.planted for leak in p.leaks_in(haystack)]


def ledger_bytes(sc: SecretCase) -> str:
    """Every byte SQLite keeps for the ledger (database file and write-ahead log), as text."""
    files = [sc.ledger_file, sc.ledger_file.with_name(sc.ledger_file.name + "-wal")]
    return "".join(f.read_bytes().decode("latin-1") for f in files if f.exists())


def actions(sc: SecretCase) -> list[QuarantineActionRow]:
    ledger = Ledger(sc.ledger_url).open()
    try:
        return list_actions(ledger)
    finally:
        ledger.dispose()


def test_encrypted_backups_keep_every_secret_out_of_the_ledger_and_purge_after_release(
    sc: SecretCase, backup_key: str
) -> None:
    assert leaks(sc, ledger_bytes(sc)) == []  # the scan wrote masked evidence only: any leak below is quarantine's
    fids = [sc.findings[p] for p in (SECRETS, PERSONAL, HIDDEN)]
    applied = run("quarantine", "apply", *fids, "--mode", "move", "--yes", "--ledger", sc.ledger_url)
    assert applied.exit_code == 0, applied.output
    rows = actions(sc)
    assert len(rows) == 3 and {r.state for r in rows} == {"applied"}
    for row in rows:
        assert row.backup and row.backup["format"] == 2 and row.backup["fernet"]
        assert set(row.backup) == {"format", "key_id", "fernet", "id", "vectors", "payload_hash"}
        assert leaks(sc, json.dumps(row.backup)) == []
    assert leaks(sc, ledger_bytes(sc)) == []
    listed = json.loads(run("quarantine", "list", "--ledger", sc.ledger_url, "--format", "json").output)
    assert {a["backup"] for a in listed["actions"]} == {f"encrypted (key {rows[0].backup['key_id']})"}  # type: ignore[index]

    released = run("quarantine", "release", *[r.id for r in rows], "--yes", "--purge-backup", "--ledger",
                   sc.ledger_url)
    assert released.exit_code == 0, released.output
    assert snapshot(sc.uri)["docs"] == sc.original["docs"]  # read back by a new client: every bit and payload
    for before, row in zip(sorted(rows, key=lambda r: r.id), sorted(actions(sc), key=lambda r: r.id), strict=True):
        assert row.state == "released" and row.backup is not None
        assert "fernet" not in row.backup and row.backup["purged"]["by"]
        assert row.backup["payload_hash"] == before.backup["payload_hash"]  # type: ignore[index]
        assert row.backup["vectors"] == before.backup["vectors"]  # type: ignore[index]
    assert leaks(sc, ledger_bytes(sc)) == []
    history = json.loads(run("history", SECRETS, "--ledger", sc.ledger_url, "--format", "json").output)
    assert history["quarantine"][0]["state"] == "released"
    again = run("quarantine", "release", *[r.id for r in rows], "--yes", "--ledger", sc.ledger_url)
    assert again.exit_code == 0 and "not applied" in again.output


def test_without_a_key_a_point_holding_a_secret_is_refused_before_anything_changes(
    sc: SecretCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    for point, why in [(SECRETS, "finding VA5"), (PERSONAL, "finding VA53"), (HIDDEN, "in its payload")]:
        refused = run("quarantine", "apply", sc.findings[point], sc.findings[PLAIN], "--yes", "--ledger",
                      sc.ledger_url)
        one_line(refused, 2, f"point(s) {point} (", why, KEY_FILE_ENV, "keygen", "nothing was changed")
        assert snapshot(sc.uri) == sc.original and actions(sc) == []
    dry = run("quarantine", "apply", sc.findings[HIDDEN], "--dry-run", "--ledger", sc.ledger_url)
    assert "would refuse" in dry.output and "no backup key" in dry.output

    plain = run("quarantine", "apply", sc.findings[PLAIN], "--yes", "--ledger", sc.ledger_url)
    assert plain.exit_code == 0, plain.output
    assert "kept in clear in the ledger" in plain.stderr and KEY_FILE_ENV in plain.stderr
    (row,) = actions(sc)
    assert row.state == "applied" and row.backup and row.backup["format"] == 1 and "payload" in row.backup
    assert run("quarantine", "release", row.id, "--yes", "--ledger", sc.ledger_url).exit_code == 0
    assert snapshot(sc.uri) == sc.original


def test_release_and_recover_with_a_wrong_or_missing_key_fail_in_one_line_and_change_nothing(
    sc: SecretCase, backup_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    applied = run("quarantine", "apply", sc.findings[SECRETS], sc.findings[PERSONAL], "--yes", "--ledger",
                  sc.ledger_url)
    assert applied.exit_code == 0, applied.output
    quarantined = snapshot(sc.uri)
    ids = sorted(r.id for r in actions(sc))

    monkeypatch.setenv(KEY_ENV, new_key().decode())
    one_line(run("quarantine", "release", *ids, "--yes", "--ledger", sc.ledger_url), 2, "was encrypted with key",
             KEY_ENV)
    monkeypatch.delenv(KEY_ENV)
    one_line(run("quarantine", "release", *ids, "--yes", "--ledger", sc.ledger_url), 2, "no key is set")
    monkeypatch.setenv(KEY_ENV, "not-a-key-at-all")
    line = one_line(run("quarantine", "release", *ids, "--yes", "--ledger", sc.ledger_url), 2, "not hold a Fernet key")
    assert "not-a-key-at-all" not in line
    assert snapshot(sc.uri) == quarantined
    assert {r.state for r in actions(sc)} == {"applied"} and all(r.lock_token is None for r in actions(sc))

    # an interrupted release (its run is gone) is finished by recover, which needs the key just as much
    ledger = Ledger(sc.ledger_url).open()
    with ledger.session() as s:
        s.execute(update(QuarantineActionRow).where(QuarantineActionRow.id == ids[0])
                  .values(state="releasing", lock_token="deadbeef0000:4242:0:elsewhere"))
    ledger.dispose()
    monkeypatch.setenv(KEY_ENV, new_key().decode())
    one_line(run("quarantine", "recover", "--ledger", sc.ledger_url), 2, "was encrypted with key")
    assert snapshot(sc.uri) == quarantined
    assert [r.state for r in sorted(actions(sc), key=lambda r: r.id)] == ["releasing", "applied"]

    monkeypatch.setenv(KEY_ENV, f"{new_key().decode()},{backup_key}")  # rotated: the old key still opens them
    assert run("quarantine", "recover", "--ledger", sc.ledger_url).exit_code == 0
    assert run("quarantine", "release", ids[1], "--yes", "--ledger", sc.ledger_url).exit_code == 0
    assert snapshot(sc.uri) == sc.original
    assert {r.state for r in actions(sc)} == {"released"}


def test_purge_of_an_earlier_release_only_while_the_live_point_still_equals_the_backup(
    sc: SecretCase, backup_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("quarantine", "apply", sc.findings[SECRETS], sc.findings[PERSONAL], "--yes", "--ledger",
               sc.ledger_url).exit_code == 0
    ids = sorted(r.id for r in actions(sc))
    assert run("quarantine", "release", *ids, "--yes", "--ledger", sc.ledger_url).exit_code == 0
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(sc.path))
    try:
        client.set_payload("docs", {"tenant": "globex"}, points=[PERSONAL])  # changed after its release
    finally:
        client.close()
    purge = run("quarantine", "release", *ids, "--yes", "--purge-backup", "--ledger", sc.ledger_url)
    assert purge.exit_code == 3 and "backup kept" in purge.stderr, purge.output
    by_id = {r.id: r for r in actions(sc)}
    assert "purged" in by_id[ids[0]].backup and "fernet" in by_id[ids[1]].backup  # type: ignore[operator]
    monkeypatch.setenv(KEY_ENV, new_key().decode())  # the key is lost: a forced purge opens nothing
    forced = run("quarantine", "release", "--point", PERSONAL, "--yes", "--purge-backup", "--force", "--ledger",
                 sc.ledger_url)
    assert forced.exit_code == 0, forced.output
    assert all("purged" in (r.backup or {}) for r in actions(sc))
    assert leaks(sc, ledger_bytes(sc)) == []
