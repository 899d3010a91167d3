"""Secret canary check: a canary of every secret and personal-data kind the detectors know is planted in a real
Qdrant store; the real CLI then scans it (debug logs on, webhook on a local HTTP server, incremental state kept),
lists, shows, labels and reviews the findings, writes the HTML report, exports SARIF and JSON, quarantines the
points and releases them. Every file vecaudit wrote (ledger, reports, exports, incremental state, temporary files),
everything it printed or logged and every byte the webhook received is searched for each raw canary: zero hits.
The store's own files are left out: they hold the canaries because they are the data."""

from __future__ import annotations

import html
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from canaries import KINDS, canary
from click.testing import CliRunner
from conftest import load_jsonl
from support import WebhookRecorder, build_qdrant_store

from auditor.cli.main import cli
from auditor.masking import MaskingFormatter

SCAN_FIELDS = ["--collection", "docs", "--text-field", "text", "--tenant-field", "tenant"]
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"  # as auditor.cli.main configures it


@pytest.fixture
def webhook() -> Iterator[WebhookRecorder]:
    with WebhookRecorder() as hook:
        yield hook


class _Run:
    """Runs CLI commands and keeps everything they print and log (logs as the CLI's masking formatter writes them)."""

    def __init__(self, ledger: str, caplog: pytest.LogCaptureFixture) -> None:
        self.ledger = ledger
        self.caplog = caplog
        self.outputs: list[str] = []

    def __call__(self, *args: str, codes: tuple[int, ...] = (0,), stdin: str | None = None) -> str:
        result = CliRunner().invoke(cli, [*args, "--ledger", self.ledger], input=stdin)
        printed = result.stdout
        for line in (stdin or "").splitlines():
            if len(line) > 3:  # the test runner echoes what the user types; a terminal would, not vecaudit
                printed = printed.replace(line, "")
        self.outputs += [printed, result.stderr]
        assert result.exit_code in codes, (args, result.output)
        return result.stdout

    def logs(self) -> str:
        formatter = MaskingFormatter(LOG_FORMAT)
        return "\n".join(formatter.format(r) for r in self.caplog.records)


def _written_files(root: Path, store: Path) -> dict[str, bytes]:
    """Every file under ``root`` except the store's own."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and store not in p.parents}


def test_no_canary_leaves_the_store(tmp_path: Path, embed: Any, webhook: WebhookRecorder,
                                    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.fernet import Fernet

    planted = [canary(kind) for kind in KINDS]
    hosts = [r["text"] for r in load_jsonl("emails.jsonl")[:20]] + [r["text"] for r in load_jsonl("pubmed.jsonl")[:40]]
    texts = [f"{hosts[i]}\n{c.fragment}\n" if i % 2 else f"{c.fragment} {hosts[i]}" for i, c in enumerate(planted)]
    texts += hosts[len(planted) :]
    payloads = [{"text": t, "tenant": ("acme", "globex", "initech")[i % 3], "source": f"doc-{i}"}
                for i, t in enumerate(texts)]
    store = tmp_path / "store"
    uri = build_qdrant_store(store, embed(texts), payloads)

    # everything vecaudit may write goes under tmp_path: ledger, exports, incremental state, temporary files
    (tmp_path / "tmp").mkdir()
    env = {"VECAUDIT_STATE_DIR": str(tmp_path / "state"), "TMPDIR": str(tmp_path / "tmp"),
           "VECAUDIT_QUARANTINE_KEY": Fernet.generate_key().decode(), "HF_HUB_OFFLINE": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"

    # the scan in a process of its own, as cron runs it: debug logs on stderr through the CLI's own handler
    vecaudit = [sys.executable, "-c", "from auditor.cli.main import main; main()"]
    scan = subprocess.run([*vecaudit, "-v", "scan", uri, *SCAN_FIELDS, "--ledger", ledger, "--incremental",
                           "--notify", webhook.url, "--format", "json"],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    assert scan.returncode == 1, scan.stderr[-3000:]
    doc = json.loads(scan.stdout)
    scan_id = str(doc["scan"]["id"])
    flagged = {f["point_id"] for f in doc["findings"] if f["detector"] in ("secrets", "pii")}
    assert set(range(len(planted))) <= flagged  # every canary was found, so the checks below mean something
    assert webhook.requests, "the webhook got nothing"

    caplog.set_level(logging.DEBUG)
    run = _Run(ledger, caplog)
    listed = json.loads(run("findings", "list", "--format", "json"))["findings"]
    content = [f for f in listed if f["detector"] in ("secrets", "pii")]
    for f in content[:3]:
        run("findings", "show", str(f["id"]))
        run("findings", "show", str(f["id"]), "--format", "json")
    # a reviewer pastes the line with the value into the note: the ledger keeps the note masked
    ids = [str(f["id"]) for f in content]
    pasted = [c.fragment.replace("\n", " ") for c in planted]
    run("findings", "label", *ids[: len(ids) // 2], "--verdict", "confirmed", "--note",
        f"rotated: {pasted[0]}; {pasted[-1]}")
    run("review", "--detector", "secrets", "--detector", "pii", "--note",
        stdin="".join(f"c\nconfirmed, was: {p}\n" for p in pasted) + "q\n")
    run("report", scan_id, "--html", str(tmp_path / "report.html"))
    run("findings", "export", "--format", "sarif", "--scan", scan_id, "-o", str(tmp_path / "findings.sarif"))
    run("findings", "export", "--format", "json", "-o", str(tmp_path / "findings.json"))
    run("findings", "export", "--format", "sarif", "--all")
    run("scans", "show", scan_id, "--format", "json")
    run("history", "0", "--format", "json")
    run("quarantine", "plan", "--detector", "secrets", "--detector", "pii", "--format", "json")
    applied = json.loads(run("quarantine", "apply", "--detector", "secrets", "--detector", "pii", "--yes",
                             "--format", "json"))["actions"]
    assert applied and all(a["ok"] for a in applied), applied
    run("quarantine", "list", "--format", "json")
    released = json.loads(run("quarantine", "release", *[str(a["action_id"]) for a in applied], "--yes",
                              "--format", "json"))["actions"]
    assert all(a["ok"] for a in released), released

    haystacks = {f"file {name}": data.decode("utf-8", "replace")
                 for name, data in _written_files(tmp_path, store).items()}
    assert "file ledger.db" in haystacks and "file report.html" in haystacks
    assert any(name.startswith("file state/") for name in haystacks)  # the incremental state was written here
    haystacks["scan stdout"], haystacks["scan stderr"] = scan.stdout, scan.stderr
    haystacks["command output"] = "\n".join(run.outputs)
    haystacks["log records"] = run.logs()
    haystacks["webhook"] = webhook.raw().decode("utf-8", "replace")
    haystacks["report, unescaped"] = html.unescape(haystacks["file report.html"])
    leaks = {(where, c.kind): c.leaks_in(text)[:2] for where, text in haystacks.items() for c in planted
             if c.leaks_in(text)}
    assert not leaks, sorted(leaks)
