"""The HTML report never carries a raw secret or personal value: a value of every kind the `secrets` and `pii`
detectors know is planted at the start of a real text in a real Qdrant store (where the map's tooltips quote it),
the store is scanned with the real CLI, and the written report is searched for each raw value, whole and in part."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from canaries import KINDS, canary
from click.testing import CliRunner
from conftest import load_jsonl
from support import build_qdrant_store

from auditor.cli.main import cli
from auditor.masking import mask_value


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, embed: Any) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("masked-report")
    hosts = [r["text"] for r in load_jsonl("wikipedia_en.jsonl")[: len(KINDS) + 20]]
    texts = []
    for i, kind in enumerate(KINDS):
        fragment = canary(kind).fragment
        texts.append(f"{fragment}\n{hosts[i]}" if i % 2 else f"Note: {fragment} {hosts[i]}")
    texts += hosts[len(KINDS) :]
    payloads = [{"text": t, "tenant": "acme" if i % 3 else "globex"} for i, t in enumerate(texts)]
    uri = build_qdrant_store(tmp / "store", embed(texts), payloads)
    ledger = f"sqlite:///{tmp / 'ledger.db'}"
    runner = CliRunner()
    scan = runner.invoke(cli, ["scan", uri, "--collection", "docs", "--text-field", "text", "--tenant-field", "tenant",
                               "-d", "secrets", "-d", "pii", "-d", "integrity", "--ledger", ledger, "--format", "json"])
    assert scan.exit_code == 1, scan.output
    doc = json.loads(scan.stdout)
    out = tmp / "report.html"
    res = runner.invoke(cli, ["report", str(doc["scan"]["id"]), "--html", str(out), "--ledger", ledger])
    assert res.exit_code == 0, res.output
    return {"page": out.read_text(encoding="utf-8"), "findings": doc["findings"], "texts": texts}


def test_every_planted_value_is_found_and_mapped(report: dict[str, Any]) -> None:
    flagged = {f["point_id"] for f in report["findings"] if f["detector"] in ("secrets", "pii")}
    assert set(range(len(KINDS))) <= flagged
    assert len(re.findall(r'<circle class="pt', report["page"])) == len(report["texts"])


@pytest.mark.parametrize("kind", KINDS)
def test_report_holds_no_raw_value(report: dict[str, Any], kind: str) -> None:
    page = report["page"]
    planted = canary(kind)
    assert not planted.leaks_in(page) and not planted.leaks_in(html.unescape(page)), planted.raw


def test_tooltips_show_masked_values(report: dict[str, Any]) -> None:
    tips = {json.loads(html.unescape(point)): html.unescape(tip)
            for point, tip in re.findall(r'data-point="([^"]+)" [^>]*data-tip="([^"]*)"', report["page"])}
    aws = KINDS.index("aws_key_id")
    assert "AKIA************ (20 chars)" in tips[aws]
    assert mask_value(canary("card_visa").raw, "card") in tips[KINDS.index("card_visa")]
    clean = len(KINDS)
    assert report["texts"][clean][:100] in tips[clean]  # text without a value is quoted as it is
