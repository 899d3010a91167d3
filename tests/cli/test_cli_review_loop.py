"""The review loop through the CLI on a real Qdrant local store of real text: `scan` says which findings alert and
why, `findings stats` counts verdicts per rule with a Wilson interval, false_positive verdicts recalibrate a rule
(`calibration show`, the scan's notes and detector config), a confirmation holds the line down, `calibration
reset` undoes it, and `--alert-on all` / `alert_on` give the old alerting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import load_jsonl
from support import build_qdrant_store

from auditor.calibration import wilson_interval
from auditor.cli.main import cli

SCAN_ARGS = ["--collection", "docs", "--text-field", "text", "-d", "integrity", "--format", "json"]
PAIRS = 6  # six pairs of points sharing one vector (VA105, score 2) and one triple (score 3)


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def store(tmp_path: Path, embed: Any) -> str:
    rows = load_jsonl("wikipedia_en.jsonl")[300:360]
    vecs = embed([r["text"] for r in rows]).copy()
    for i in range(PAIRS):
        vecs[2 * i + 1] = vecs[2 * i]
    vecs[20] = vecs[21] = vecs[22]
    return build_qdrant_store(tmp_path / "store", vecs, [{"text": r["text"]} for r in rows])


def _scan(store: str, ledger: str, *extra: Any) -> tuple[int, dict[str, Any]]:
    out = invoke("scan", store, *SCAN_ARGS, "--ledger", ledger, *extra)
    assert out.exit_code in (0, 1), out.output
    return out.exit_code, json.loads(out.stdout)


def _va105(doc: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    return {f["point_id"]: f for f in doc["findings"] if f["rule_id"] == "VA105"}


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_stats_calibration_and_alerting_through_the_cli(
    backend: str, store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    pg = backend == "postgres"
    ledger = request.getfixturevalue("fresh_postgres_db") if pg else f"sqlite:///{tmp_path / 'ledger.db'}"
    if pg:
        assert invoke("db", "upgrade", "--ledger", ledger).exit_code == 0
    code, doc = _scan(store, ledger, "--fail-on", "medium")
    found = _va105(doc)
    assert code == 1 and len(found) == 2 * PAIRS + 3
    assert all(f["alert"] and f["alert_reason"] == "baseline: first scan of this collection" for f in found.values())

    # an unchanged rescan: the same MEDIUM findings are listed, none alerts, so --fail-on medium passes ...
    code, doc = _scan(store, ledger, "--fail-on", "medium")
    assert code == 0 and len(_va105(doc)) == 2 * PAIRS + 3
    assert {f["alert_reason"] for f in doc["findings"]} == {
        "no point new or changed since the last scan: listed, does not alert (--alert-on all alerts)"
    }
    assert doc["scan"]["counts"]["alerts"] == {"alert_on": "changed", "alerting": 0, "quiet": len(doc["findings"])}
    # ... unless the old behaviour is asked for, by flag or by config key
    assert _scan(store, ledger, "--fail-on", "medium", "--alert-on", "all")[0] == 1
    config = tmp_path / "vecaudit.toml"
    config.write_text('alert_on = "all"\nfail_on = "medium"\n')
    assert _scan(store, ledger, "--config", config)[0] == 1
    config.write_text('alert_on = "sometimes"\n')
    bad = invoke("scan", store, *SCAN_ARGS, "--ledger", ledger, "--config", config)
    assert bad.exit_code == 2 and "alert_on" in bad.output

    # reviews: four pair findings false_positive -> fewer than the minimum, nothing moves
    ids = {p: f["id"] for p, f in found.items()}
    pair_ids = [ids[p] for p in range(2 * PAIRS)]
    assert invoke("findings", "label", *pair_ids[:4], "--verdict", "false_positive", "--ledger", ledger).exit_code == 0
    shown = json.loads(invoke("calibration", "show", "--ledger", ledger, "--format", "json").stdout)
    assert [(c["rule_id"], c["false_positives"], c["alert_above"]) for c in shown["calibrations"]] == [
        ("VA105", 4, None)
    ]
    assert "needs 5" in invoke("calibration", "show", "--ledger", ledger).stdout
    # six false_positive, one accepted, one confirmed triple member
    assert invoke("findings", "label", *pair_ids[4:6], "--verdict", "false_positive", "--ledger", ledger).exit_code == 0
    assert invoke("findings", "label", pair_ids[6], "--verdict", "accepted", "--ledger", ledger).exit_code == 0
    assert invoke("findings", "label", ids[20], "--verdict", "confirmed", "--ledger", ledger).exit_code == 0

    stats = json.loads(invoke("findings", "stats", "--ledger", ledger, "--format", "json").stdout)
    va105 = next(r for r in stats["rules"] if r["rule_id"] == "VA105")
    assert (va105["detector"], va105["findings"], va105["confirmed"], va105["false_positive"], va105["accepted"]) == (
        "integrity", 2 * PAIRS + 3, 1, 6, 1
    )
    assert va105["open"] == 2 * PAIRS + 3 - 8 and va105["reviewed"] == 8
    assert va105["precision"] == pytest.approx(1 / 7)
    low, high = wilson_interval(1, 7) or (None, None)
    assert (va105["precision_low"], va105["precision_high"]) == (low, high)
    table = invoke("findings", "stats", "--ledger", ledger).stdout
    assert "VA105" in table and "0.14" in table and f"{low:.2f}-{high:.2f}" in table
    assert json.loads(invoke("findings", "stats", "--ledger", ledger, "--collection", "other",
                             "--format", "json").stdout)["rules"] == []

    # the next scan keeps the open pair findings (score 2, at the line) LOW; the triple (score 3) stays MEDIUM
    code, doc = _scan(store, ledger)
    after = _va105(doc)
    assert {p for p, f in after.items() if f["severity"] == "low"} == set(range(2 * PAIRS))
    assert all(after[p]["severity"] == "medium" for p in (20, 21, 22))
    assert after[8]["evidence"]["calibration"]["alert_above"] == 2.0
    assert any(n.startswith("calibration: VA105 alerts only above 2 ") for n in doc["scan"]["notes"])
    cfg = next(c for c in doc["scan"]["detectors"] if c["name"] == "integrity")
    assert cfg["calibration"]["VA105"]["false_positives"] == 6
    listed = json.loads(invoke("findings", "list", "--rule", "VA105", "--ledger", ledger, "--format", "json").stdout)
    assert len(listed["findings"]) == 2 * PAIRS + 3  # kept and reviewable, not dropped

    # --no-calibration: one scan at the rule's own severity (MEDIUM again, so it alerts), then back to the line
    code, doc = _scan(store, ledger, "--no-calibration")
    assert not any(n.startswith("calibration:") for n in doc["scan"]["notes"])
    assert _va105(doc)[8]["severity"] == "medium" and "calibration" not in _va105(doc)[8]["evidence"]
    assert _va105(_scan(store, ledger)[1])[8]["severity"] == "low"

    # a confirmed pair finding holds the line strictly below its score: the pairs are MEDIUM again and alert once
    assert invoke("findings", "label", ids[10], "--verdict", "confirmed", "--ledger", ledger).exit_code == 0
    code, doc = _scan(store, ledger, "--fail-on", "medium")
    after = _va105(doc)
    assert code == 1 and all(after[p]["severity"] == "medium" for p in range(2 * PAIRS))
    assert after[8]["alert"] and after[8]["alert_reason"] == "raised from low since the last scan"
    assert "held below the lowest confirmed score 2" in " ".join(doc["scan"]["notes"])

    # reset: every false_positive verdict so far is forgotten for calibration; the verdicts themselves stay
    out = invoke("calibration", "reset", "--collection", "docs", "--rule", "VA105", "--ledger", ledger)
    assert out.exit_code == 0 and "calibration reset (VA105)" in out.output
    shown = json.loads(invoke("calibration", "show", "--ledger", ledger, "--format", "json").stdout)
    assert all(c["rule_id"] != "VA105" or c["false_positives"] == 0 for c in shown["calibrations"])
    code, doc = _scan(store, ledger)
    assert not any(n.startswith("calibration:") for n in doc["scan"]["notes"])
    assert sum(f["status"] == "false_positive" for f in _va105(doc).values()) == 6
    assert invoke("calibration", "reset", "--collection", "nope", "--ledger", ledger).exit_code == 2


def test_wilson_interval_matches_published_values() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553-0.3662; 15/148 -> 0.0624-0.1605
    for (k, n), (lo, hi) in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605)}.items():
        got = wilson_interval(k, n)
        assert got is not None and got[0] == pytest.approx(lo, abs=5e-5) and got[1] == pytest.approx(hi, abs=5e-5)
    assert wilson_interval(0, 0) is None
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=5e-5))
    assert np.isclose(wilson_interval(10, 10)[1], 1.0)  # type: ignore[index]
