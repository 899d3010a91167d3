"""Tables printed to a terminal show control characters from the store as escape text: an id or tenant label
written by whoever can write to the store must not ring the bell, clear the screen or start an escape sequence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from auditor.cli.main import cli
from auditor.cli.output import terminal_safe

HOSTILE = "evil\x07\x08\x1b[2J\x1b]0;pwned\x07\x9b31m"


def test_terminal_safe_escapes_every_control_character() -> None:
    shown = terminal_safe(HOSTILE)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert shown.startswith("evil\\x07\\x08\\x1b[2J")
    assert terminal_safe("plain text, é, 漢字") == "plain text, é, 漢字"
    assert terminal_safe(7) == 7


def test_findings_table_never_prints_a_control_character_from_the_store(tmp_path: Path) -> None:
    texts = [json.loads(line)["text"] for line in (Path(__file__).parents[1] / "data" / "wikipedia_en.jsonl").open()]
    vectors = np.random.default_rng(3).standard_normal((12, 8)).astype(np.float32)
    rows = [{"id": i, "vector": vectors[i].tolist(), "text": texts[i], "tenant": "acme"} for i in range(12)]
    rows[4]["id"] = HOSTILE
    rows[4]["vector"] = [0.0] * 8  # a zero vector: VA102 names the hostile id in the table
    export = tmp_path / "dump.jsonl"
    export.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    runner = CliRunner()
    scanned = runner.invoke(cli, ["scan", f"file://{export}", "--text-field", "text", "--detector", "integrity",
                                  "--ledger", ledger, "--exit-zero"])
    assert scanned.exit_code == 0, scanned.output
    listed = runner.invoke(cli, ["findings", "list", "--ledger", ledger])
    assert listed.exit_code == 0, listed.output
    assert "evil\\x07" in listed.stdout
    assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F for c in listed.stdout)
