"""The CLI end to end on a real Qdrant local store of real text: JSON document, exit codes, labels, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import load_jsonl
from support import build_qdrant_store, read_collection

from auditor.cli.main import cli
from auditor.ledger import Ledger

SCAN_ARGS = ["--collection", "docs", "--text-field", "text", "--tenant-field", "tenant", "--doc-id-field", "doc_id"]
CORE = ["-d", "integrity", "-d", "provenance"]


def invoke(*args: Any, input: str | None = None) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture(scope="module")
def texts_and_vectors(embed: Any) -> tuple[list[dict[str, Any]], np.ndarray]:
    rows = load_jsonl("wikipedia_en.jsonl")[200:280]
    return rows, embed([r["text"] for r in rows])


@pytest.fixture
def planted_store(tmp_path: Path, texts_and_vectors: Any) -> str:
    """NaN, zero, wrong-norm and duplicate-id points among clean real text (dot-product collection)."""
    rows, vecs = texts_and_vectors
    vecs = vecs.copy()
    payloads = [{"text": r["text"], "tenant": "acme", "doc_id": r["id"]} for r in rows]
    vecs[1] = np.nan
    vecs[2] = 0.0
    vecs[3] = vecs[3] * 9.0
    payloads[4] = {**payloads[5], "text": payloads[5]["text"] + " Edited."}  # one doc id, two texts
    return build_qdrant_store(tmp_path / "store", vecs, payloads, distance="dot", validate=False)


def test_scan_json_reports_each_planted_fault_and_exits_1(planted_store: str, sqlite_ledger_url: str) -> None:
    result = invoke("scan", planted_store, *SCAN_ARGS, *CORE, "--ledger", sqlite_ledger_url, "--format", "json")
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["version"] == 1
    assert {"id", "source", "collection", "status", "started_at", "finished_at", "points_scanned"} <= set(doc["scan"])
    assert doc["scan"]["status"] == "completed" and doc["scan"]["points_scanned"] == 80
    keys = {"id", "fingerprint", "detector", "rule_id", "point_id", "collection", "tenant", "severity", "score",
            "threshold", "message", "evidence", "tags"}
    assert all(keys <= set(f) for f in doc["findings"])
    got = {(f["rule_id"], f["point_id"]) for f in doc["findings"]}
    assert {("VA101", 1), ("VA102", 2), ("VA104", 3), ("VA106", 4), ("VA106", 5)} <= got


def test_changed_vector_then_false_positive_labels_make_the_scan_clean(
    planted_store: str, sqlite_ledger_url: str, texts_and_vectors: Any
) -> None:
    from qdrant_client import QdrantClient, models

    first = invoke("scan", planted_store, *SCAN_ARGS, *CORE, "--ledger", sqlite_ledger_url, "--format", "json")
    assert first.exit_code == 1
    _, vecs = texts_and_vectors
    client = QdrantClient(path=planted_store.removeprefix("qdrant+local://"))
    client.update_vectors("docs", points=[models.PointVectors(id=10, vector=vecs[11].tolist())])
    client.close()
    second = invoke("scan", planted_store, *SCAN_ARGS, *CORE, "--ledger", sqlite_ledger_url, "--format", "json")
    assert second.exit_code == 1
    doc = json.loads(second.stdout)
    assert ("VA201", 10) in {(f["rule_id"], f["point_id"]) for f in doc["findings"]}
    ids = [str(f["id"]) for f in doc["findings"]]
    labelled = invoke("findings", "label", *ids, "--verdict", "false_positive", "--note", "test data",
                      "--reviewer", "ci", "--ledger", sqlite_ledger_url)
    assert labelled.exit_code == 0, labelled.output
    third = invoke("scan", planted_store, *SCAN_ARGS, *CORE, "--ledger", sqlite_ledger_url, "--format", "json")
    # VA201 is about a change since the previous scan, so it does not recur; every other finding is silenced
    assert third.exit_code == 0, third.output
    statuses = {f["status"] for f in json.loads(third.stdout)["findings"]}
    assert statuses == {"false_positive"}


def test_listing_showing_history_and_review(planted_store: str, sqlite_ledger_url: str) -> None:
    scan = invoke("scan", planted_store, *SCAN_ARGS, *CORE, "--ledger", sqlite_ledger_url, "--exit-zero")
    assert scan.exit_code == 0
    listed = invoke("findings", "list", "--severity", "high", "--ledger", sqlite_ledger_url, "--format", "json")
    findings = json.loads(listed.stdout)["findings"]
    assert findings and all(f["severity"] in ("high", "critical") for f in findings)
    table = invoke("findings", "list", "--ledger", sqlite_ledger_url)
    assert "VA101" in table.stdout and "severity" in table.stdout
    shown = invoke("findings", "show", findings[0]["id"], "--ledger", sqlite_ledger_url)
    assert shown.exit_code == 0 and "evidence:" in shown.stdout
    # interactive review: confirm, mark false positive, skip, quit — each verdict committed at once
    review = invoke("review", "--ledger", sqlite_ledger_url, "--reviewer", "alice", input="c\nf\ns\nq\n")
    assert review.exit_code == 0, review.output
    after = json.loads(invoke("findings", "list", "--ledger", sqlite_ledger_url, "--format", "json").stdout)["findings"]
    assert sorted(f["status"] for f in after).count("confirmed") == 1
    assert sorted(f["status"] for f in after).count("false_positive") == 1
    history = invoke("history", "1", "--ledger", sqlite_ledger_url, "--format", "json")
    hist = json.loads(history.stdout)
    assert hist["versions"][0]["change"] == "new" and hist["findings"][0]["rule_id"] == "VA101"
    scans = json.loads(invoke("scans", "list", "--ledger", sqlite_ledger_url, "--format", "json").stdout)["scans"]
    assert scans[0]["status"] == "completed"
    shown_scan = invoke("scans", "show", scans[0]["id"], "--ledger", sqlite_ledger_url)
    assert "integrity" in shown_scan.stdout


def test_scan_leaves_the_store_unchanged(planted_store: str, sqlite_ledger_url: str) -> None:
    before = read_collection(planted_store)
    invoke("scan", planted_store, *SCAN_ARGS, "--ledger", sqlite_ledger_url, "--exit-zero")
    assert read_collection(planted_store) == before


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["scan", "qdrant+local:///nonexistent/store", "--collection", "docs"], 2, "no Qdrant local store"),
        (["scan", "not-a-uri"], 2, "not a store URI"),
        (["scan", "ftp://x/y"], 2, "no connector for scheme"),
        (["scan"], 2, "no store to scan"),
        (["findings", "show", "999"], 2, "no finding with id 999"),
        (["scan", "{store}", "--collection", "missing"], 2, "collection 'missing' not found"),
        (["scan", "{store}", "--collection", "docs", "-d", "nope"], 2, "unknown detector 'nope'"),
        (["scan", "{store}", "--collection", "docs", "--fail-on", "huge"], 2, "Invalid value"),
    ],
)
def test_user_mistakes_give_one_line_and_the_right_exit_code(
    args: list[str], code: int, needle: str, planted_store: str, sqlite_ledger_url: str
) -> None:
    Ledger(sqlite_ledger_url).open().dispose()  # read commands need an existing ledger
    argv = [a.replace("{store}", planted_store) for a in args] + ["--ledger", sqlite_ledger_url]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == code, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def test_unwritable_ledger_exits_4(planted_store: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["scan", planted_store, "--collection", "docs",
                                      "--ledger", f"sqlite:///{tmp_path}/no/such/dir/l.db"])
    assert result.exit_code == 4
    assert "not writable" in result.output or "missing" in result.output


def test_config_file_and_flag_precedence(planted_store: str, sqlite_ledger_url: str, tmp_path: Path) -> None:
    cfg = tmp_path / "vecaudit.toml"
    cfg.write_text(
        f'source = "{planted_store}"\ncollection = "docs"\nledger = "{sqlite_ledger_url}"\nfail_on = "critical"\n'
        '[fields]\ntext = "text"\ntenant = "tenant"\n[detectors]\nenable = ["integrity"]\n'
        "[detectors.integrity]\nnorm_z = 4.0\n"
    )
    result = invoke("scan", "--config", cfg, "--format", "json")
    assert result.exit_code == 0  # nothing critical
    doc = json.loads(result.stdout)
    assert [d["name"] for d in doc["scan"]["detectors"]] == ["integrity"]
    assert doc["scan"]["detectors"][0]["params"]["norm_z"] == 4.0
    assert invoke("scan", "--config", cfg, "--fail-on", "high", "--format", "json").exit_code == 1  # flag wins
    cfg.write_text('source = "x"\n[fields]\ntxt = "text"\n')
    bad = CliRunner().invoke(cli, ["scan", "--config", str(cfg)])
    assert bad.exit_code == 2 and "unknown key 'fields.txt'" in bad.output
    cfg.write_text("source = \n")
    assert CliRunner().invoke(cli, ["scan", "--config", str(cfg)]).exit_code == 2
    cfg.write_text('source = "x"\n[detectors.integrity]\nnorm_zz = 3\n')
    bad = CliRunner().invoke(cli, ["scan", planted_store, "--collection", "docs", "--config", str(cfg),
                                   "--ledger", sqlite_ledger_url])
    assert bad.exit_code == 2 and "norm_zz" in bad.output


def test_plugins_list_shows_builtins() -> None:
    result = invoke("plugins", "list", "--format", "json")
    names = {(p["kind"], p["name"]) for p in json.loads(result.stdout)["plugins"]}
    assert {("connector", "qdrant"), ("detector", "integrity"), ("detector", "provenance")} <= names


def test_incremental_scan_keeps_its_state_in_state_dir(planted_store: str, sqlite_ledger_url: str,
                                                      tmp_path: Path) -> None:
    """`--incremental --state-dir DIR`: the state lands in DIR (private), and the next scan patches the graph."""
    state = tmp_path / "state"
    args = ["scan", planted_store, *SCAN_ARGS, "-d", "near-duplicate", "--ledger", sqlite_ledger_url,
            "--incremental", "--state-dir", state, "--format", "json", "--exit-zero"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    (collection_dir,) = state.iterdir()
    assert (collection_dir / "manifest.json").is_file() and oct(collection_dir.stat().st_mode)[-3:] == "700"
    second = json.loads(invoke(*args).stdout)
    assert any("neighbour graph 'all' patched: 78 rows reused, 0 searched again" in n for n in second["scan"]["notes"])
    bad = invoke(*args[:-4], "--state-dir", planted_store.removeprefix("qdrant+local://") + "/meta.json")
    assert bad.exit_code == 2 and "Traceback" not in bad.output
