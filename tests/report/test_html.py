"""`vecaudit report SCAN_ID --html FILE` on a real scanned store: self-contained (no network at view time),
map/summaries/frameworks/trend/cards present, a report without a map when the store is gone, and the page
loaded in headless Chromium (DevTools protocol) without console errors, with a screenshot artifact."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import load_jsonl
from support import build_qdrant_store, run_scan

from auditor.cli.main import cli
from auditor.types import FieldMap

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DETECTORS = ["integrity", "provenance", "drift"]


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory, embed) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from qdrant_client import QdrantClient, models

    tmp = tmp_path_factory.mktemp("report")
    wiki = load_jsonl("wikipedia_en.jsonl")[:100]
    pubmed = load_jsonl("pubmed.jsonl")[:60]
    texts = [r["text"] for r in wiki] + [r["text"] for r in pubmed]
    vecs = embed(texts).copy()
    payloads: list[dict[str, Any]] = [
        {"text": t, "tenant": "acme" if i < 100 else "globex"} for i, t in enumerate(texts)
    ]
    vecs[3] = np.nan
    vecs[11] = vecs[12]
    del payloads[20]["tenant"]
    payloads[30]["text"] = "<script>alert('x')</script> & friends"  # must come out escaped
    uri = build_qdrant_store(tmp / "store", vecs, payloads, distance="cosine", validate=False)
    ledger = f"sqlite:///{tmp / 'ledger.db'}"
    fm = FieldMap(text="text", tenant="tenant")
    first = run_scan(uri, ledger, detectors=DETECTORS, field_map=fm)
    client = QdrantClient(path=uri.removeprefix("qdrant+local://"))
    client.update_vectors("docs", points=[models.PointVectors(id=40, vector=vecs[41].tolist())])  # tampered
    client.close()
    second = run_scan(uri, ledger, detectors=DETECTORS, field_map=fm)
    dup = next(r for r in second.findings if r.finding.rule_id == "VA105")
    res = CliRunner().invoke(cli, ["findings", "label", str(dup.row_id), "--verdict", "accepted", "--note",
                                   "mirror copy", "--reviewer", "ana", "--ledger", ledger])
    assert res.exit_code == 0, res.output
    out = tmp / "report.html"
    res = CliRunner().invoke(cli, ["report", str(second.scan_id), "--html", str(out), "--ledger", ledger])
    assert res.exit_code == 0, res.output
    return {"uri": uri, "ledger": ledger, "first": first, "second": second, "html": out, "tmp": tmp}


def test_report_is_self_contained_and_complete(scanned: dict[str, Any]) -> None:
    page = scanned["html"].read_text(encoding="utf-8")
    # nothing is fetched at view time: no external scripts, styles, images, fonts or imports
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//|@import", page, re.I)
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    second = scanned["second"]
    assert f"scan #{second.scan_id}" in page
    circles = re.findall(r'<circle class="pt( flagged)?"', page)
    assert len(circles) == 159  # 160 points, the NaN vector cannot be drawn
    flagged = {json.loads(json.loads(f'"{p}"')) for p in re.findall(r'class="pt flagged"[^>]*data-point="([^"]+)"',
                                                                    page.replace("&quot;", '\\"'))}
    assert {11, 12, 20, 40} <= flagged
    assert "LLM08:2025" in page and "Vector and Embedding Weaknesses" in page
    assert "AML.T0070" in page  # provenance VA201 maps to RAG poisoning
    assert page.count('<article class="card"') == len(second.findings)
    assert 'data-status="accepted"' in page and "mirror copy" in page
    trend_rows = re.findall(r"<tr><td>#(\d+)", page)
    assert trend_rows == [str(scanned["first"].scan_id), str(second.scan_id)]


def test_report_without_a_reachable_store_says_so(scanned: dict[str, Any], tmp_path: Path) -> None:
    store = Path(scanned["uri"].removeprefix("qdrant+local://"))
    moved = tmp_path / "moved-store"
    shutil.move(store, moved)
    try:
        out = tmp_path / "nomap.html"
        res = CliRunner().invoke(
            cli, ["report", str(scanned["second"].scan_id), "--html", str(out), "--ledger", scanned["ledger"]]
        )
    finally:
        shutil.move(moved, store)
    assert res.exit_code == 0, res.output
    page = out.read_text(encoding="utf-8")
    assert 'id="map-missing"' in page and "could not be read" in page and "<circle" not in page
    assert page.count('<article class="card"') == len(scanned["second"].findings)


def test_unknown_scan_is_a_usage_error(scanned: dict[str, Any], tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["report", "999", "--html", str(tmp_path / "x.html"), "--ledger", scanned["ledger"]])
    assert res.exit_code == 2 and "no scan with id 999" in res.output


class _DevTools:
    """A minimal Chrome DevTools Protocol client over websocket-client (offline, no browser driver needed)."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(e.get("method") == method for e in self.events):
                return
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")


def test_report_renders_in_headless_chromium(scanned: dict[str, Any], tmp_path: Path) -> None:
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if binary is None:
        pytest.skip("Chromium not installed (`make system-deps` installs Debian's chromium)")
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--window-size=1280,2200", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if time.time() > deadline or proc.poll() is not None:
                pytest.fail("Chromium did not open its DevTools port")
            time.sleep(0.2)
        port = int(port_file.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
            targets = json.loads(response.read())
        page_target = next(t for t in targets if t["type"] == "page")
        cdp = _DevTools(page_target["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log", "Network"):
            cdp.call(f"{domain}.enable")
        cdp.call("Emulation.setDeviceMetricsOverride", width=1280, height=2200, deviceScaleFactor=1, mobile=False)
        cdp.call("Page.navigate", url=scanned["html"].resolve().as_uri())
        cdp.wait_for("Page.loadEventFired")
        # hover a flagged point: the tooltip must show its details
        cdp.evaluate(
            "var c=document.querySelector('circle.flagged');var r=c.getBoundingClientRect();"
            "c.dispatchEvent(new MouseEvent('mousemove',{bubbles:true,clientX:r.x,clientY:r.y}));"
        )
        state = cdp.evaluate(
            "JSON.stringify({ready: document.body.dataset.ready,"
            " circles: document.querySelectorAll('#map circle').length,"
            " flagged: document.querySelectorAll('#map circle.flagged').length,"
            " mapWidth: document.getElementById('map').getBoundingClientRect().width,"
            " summaryRows: document.querySelectorAll('#summary table tbody tr').length,"
            " owaspRows: document.querySelectorAll('#frameworks table.fw')[0].querySelectorAll('tbody tr').length,"
            " trendBars: document.querySelectorAll('#trend rect.bar').length,"
            " cards: document.querySelectorAll('.card').length,"
            " tip: document.getElementById('tip').textContent,"
            " tipShown: getComputedStyle(document.getElementById('tip')).display})"
        )
        shot = cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        ARTIFACTS.mkdir(exist_ok=True)
        import base64

        (ARTIFACTS / "report.png").write_bytes(base64.b64decode(shot["data"]))
        cdp.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    info = json.loads(state)
    errors = [e for e in cdp.events if e.get("method") == "Runtime.exceptionThrown"]
    errors += [e for e in cdp.events if e.get("method") == "Runtime.consoleAPICalled"
               and e["params"]["type"] in ("error", "assert")]
    errors += [e for e in cdp.events
               if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]
    assert not errors, errors[:3]
    fetched = [e["params"]["request"]["url"] for e in cdp.events if e.get("method") == "Network.requestWillBeSent"]
    assert all(url.startswith("file://") for url in fetched), fetched
    assert info["ready"] == "1"
    assert info["circles"] == 159 and info["flagged"] >= 4 and info["mapWidth"] > 600
    assert info["summaryRows"] >= 4 and info["owaspRows"] >= 1 and info["trendBars"] >= 2
    assert info["cards"] == len(scanned["second"].findings)
    assert info["tipShown"] == "block" and "findings:" in info["tip"]
    assert (ARTIFACTS / "report.png").stat().st_size > 20_000
