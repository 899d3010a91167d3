"""`scan --notify URL` posts a JSON summary of *new alerting* findings to a webhook (a real HTTP server on
127.0.0.1): a first scan reports everything, an unchanged rescan posts nothing, a new MEDIUM fault on a changed point
is posted alone (a new LOW one is only counted as quiet), and `alert_on="all"` posts every new finding."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import load_jsonl
from support import WebhookRecorder, build_qdrant_store

from auditor.context import ScanSettings
from auditor.engine import Scanner, ScanOptions, ScanResult
from auditor.ledger import Ledger
from auditor.registry import connector_for
from auditor.types import FieldMap
from detectors.integrity import IntegrityDetector


@pytest.fixture
def webhook() -> Iterator[tuple[str, WebhookRecorder]]:
    with WebhookRecorder() as hook:
        yield hook.url, hook


def _scan(uri: str, ledger_url: str, notify: str, alert_on: str = "changed") -> ScanResult:
    ledger = Ledger(ledger_url).open()
    connector = connector_for(uri, collection="docs")
    try:
        opts = ScanOptions(
            field_map=FieldMap(text="text", tenant="tenant"),
            settings=ScanSettings(),
            show_progress=False,
            notify_url=notify,
            alert_on=alert_on,
        )
        return Scanner(ledger, connector, [IntegrityDetector()], opts).run()
    finally:
        connector.close()
        ledger.dispose()


def test_webhook_receives_only_new_findings(tmp_path: Path, sqlite_ledger_url: str, webhook, embed) -> None:  # type: ignore[no-untyped-def]
    from qdrant_client import QdrantClient

    url, hook = webhook
    rows = load_jsonl("wikipedia_en.jsonl")[:40]
    vecs = embed([r["text"] for r in rows])
    payloads: list[dict[str, Any]] = [{"text": r["text"], "tenant": "acme"} for r in rows]
    del payloads[3]["tenant"]
    payloads[4]["text"] = ""
    uri = build_qdrant_store(tmp_path / "store", vecs, payloads)

    first = _scan(uri, sqlite_ledger_url, url)
    assert len(hook.received) == 1
    doc = hook.received[0]
    assert hook.headers[0]["Content-Type"] == "application/json"
    assert doc["event"] == "vecaudit.scan" and doc["scan"]["id"] == first.scan_id
    assert doc["scan"]["status"] == "completed" and doc["scan"]["collection"] == "docs"
    assert {(f["rule_id"], f["point_id"]) for f in doc["new_findings"]} == {("VA108", 3), ("VA109", 4)}
    assert doc["new_findings_total"] == 2 and doc["new_by_severity"] == {"high": 1, "low": 1}
    assert "2 new finding(s)" in doc["text"]
    assert any("notified the webhook of 2 new finding(s)" in n for n in first.notes)

    _scan(uri, sqlite_ledger_url, url)  # nothing changed: nothing new, no post
    assert len(hook.received) == 1

    from qdrant_client import models

    client = QdrantClient(path=uri.removeprefix("qdrant+local://"))
    client.set_payload("docs", payload={"text": 17}, points=[9])
    client.update_vectors("docs", points=[models.PointVectors(id=10, vector=vecs[11].tolist())])
    client.close()
    third = _scan(uri, sqlite_ledger_url, url)
    assert len(hook.received) == 2
    posted = hook.received[1]
    new = posted["new_findings"]
    # point 10 now holds point 11's vector: both copies are about the changed point 10, so both alert
    assert [(f["rule_id"], f["point_id"], f["severity"]) for f in new] == [("VA105", 10, "medium"),
                                                                           ("VA105", 11, "medium")]
    assert {f["alert_reason"] for f in new} == {"involves point(s) new or changed since the last scan: 10"}
    assert posted["quiet_new_findings_total"] == 1  # VA109 on point 9: LOW, listed but not announced
    assert len(third.findings) == 5  # the two old ones recur but are not announced again
    assert third.exit_code() == 1  # the recurring HIGH (VA108) still fails the scan

    client = QdrantClient(path=uri.removeprefix("qdrant+local://"))
    client.set_payload("docs", payload={"text": 18}, points=[12])
    client.close()
    _scan(uri, sqlite_ledger_url, url, alert_on="all")  # the old behaviour: every new finding is posted
    assert [(f["rule_id"], f["point_id"]) for f in hook.received[2]["new_findings"]] == [("VA109", 12)]


def test_unreachable_or_refusing_webhook_does_not_fail_the_scan(
    tmp_path: Path, sqlite_ledger_url: str, webhook, embed  # type: ignore[no-untyped-def]
) -> None:
    url, hook = webhook
    rows = load_jsonl("wikipedia_en.jsonl")[:10]
    payloads: list[dict[str, Any]] = [{"text": r["text"]} for r in rows]
    uri = build_qdrant_store(tmp_path / "store", embed([r["text"] for r in rows]), payloads)
    hook.status = 403
    refused = _scan(uri, sqlite_ledger_url, url)
    assert refused.status == "completed"
    assert len(hook.received) == 1  # a 4xx is not retried
    assert any(n == "webhook notification failed: HTTP 403" for n in refused.notes)

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    ledger2 = f"sqlite:///{tmp_path / 'other.db'}"
    result = _scan(uri, ledger2, f"http://127.0.0.1:{closed}/hook")
    assert result.status == "completed" and result.exit_code() == 1
    assert any(n.startswith("webhook notification failed:") for n in result.notes)
