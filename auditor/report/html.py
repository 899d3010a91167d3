"""``vecaudit report SCAN_ID --html FILE``: one self-contained HTML page (inline CSS, JS and SVG, nothing
fetched at view time) with summaries, OWASP LLM Top 10 / MITRE ATLAS mapping, a 2-D map of the collection,
finding cards with evidence and neighbours, review status and the trend across scans of the collection."""

from __future__ import annotations

import html
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import select

from auditor import __version__
from auditor.cli.output import finding_json, iso, review_json
from auditor.errors import ConfigError
from auditor.findings import point_key
from auditor.ledger import repository as repo
from auditor.ledger.models import REVIEW_STATUSES, CollectionRow, ScanRow
from auditor.ledger.session import Ledger
from auditor.masking import redact_text
from auditor.types import FieldMap, Severity, resolve_field, tenant_label

log = logging.getLogger(__name__)

SEVERITY_ORDER = [s.value for s in sorted(Severity, key=lambda s: -s.rank)]
SEVERITY_COLOURS = {
    "critical": "#7f1d1d",
    "high": "#dc2626",
    "medium": "#f59e0b",
    "low": "#3b82f6",
    "info": "#9ca3af",
}
#: Characters of a point's text in its map tooltip (masked before the cut).
TIP_CHARS = 160
#: Evidence keys that list neighbouring / related points (rendered as a neighbour table).
NEIGHBOUR_KEYS = ("neighbours", "neighbors", "nearest", "nearest_neighbours", "others", "points", "members")
MAX_CARDS = 500
_TAG_RE = re.compile(r"^(OWASP)-(LLM\d\d:\d{4})\s+(.*)$|^(MITRE-ATLAS)\s+(AML\.T\d{4}(?:\.\d{3})?)\s+(.*)$")


@dataclass
class MapData:
    """2-D PCA coordinates of (a sample of) the collection; ``flagged`` rows carry their finding ids."""

    xy: np.ndarray
    ids: list[Any]
    tenants: list[str | None]
    texts: list[str]
    flagged: list[list[int]]
    explained: list[float]
    total_points: int
    shown: int


@dataclass
class ReportData:
    scan: dict[str, Any]
    collection_key: str
    findings: list[dict[str, Any]]
    trend: list[dict[str, Any]]
    map: MapData | None = None
    map_note: str | None = None
    generated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


def collect(ledger: Ledger, scan_id: int) -> ReportData:
    """Everything the report shows except the map: the scan, its findings (this scan's occurrence), trend."""
    with ledger.session() as s:
        scan = s.get(ScanRow, scan_id)
        if scan is None:
            raise ConfigError(f"no scan with id {scan_id}", hint="see `vecaudit scans list`")
        coll = s.get(CollectionRow, scan.collection_id)
        assert coll is not None
        rows = repo.query_findings(s, repo.FindingFilter(scan_id=scan_id))
        findings = []
        occurrences = repo.latest_occurrences(s, [row.id for row in rows], scan_id)
        for row in rows:
            doc = finding_json(row, occurrences.get(row.id), collection=scan.collection_name)
            doc["reviews"] = [review_json(r) for r in row.reviews]
            doc["is_new"] = row.first_scan_id == scan_id
            findings.append(doc)
        trend = []
        for other in s.scalars(select(ScanRow).where(ScanRow.collection_id == scan.collection_id).order_by(ScanRow.id)):
            summary = repo.scan_finding_summary(s, other.id)
            trend.append(
                {
                    "id": other.id,
                    "started_at": iso(other.started_at),
                    "status": other.status,
                    "points": other.points_scanned,
                    "by_severity": summary["by_severity"],
                    "findings": sum(summary["by_severity"].values()),
                    "incremental": other.incremental,
                }
            )
        from auditor.cli.output import scan_json

        return ReportData(scan=scan_json(scan), collection_key=coll.key, findings=findings, trend=trend)


def load_map(data: ReportData, *, vector_name: str | None, max_points: int = 5000, seed: int = 0) -> None:
    """Re-read vectors from the store (URI and field map from the ledger) and project them with PCA.

    Reads up to ``max_points`` points in store order plus every flagged point; on any failure the report
    goes without a map and says why (``data.map_note``).
    """
    from sklearn.decomposition import PCA

    from auditor.registry import connector_for

    scan = data.scan
    field_map = FieldMap(**{k: v for k, v in (scan.get("field_map") or {}).items() if k in FieldMap.__annotations__})
    flagged_by_key: dict[str, list[int]] = {}
    for f in data.findings:
        if f["point_id"] is not None:
            flagged_by_key.setdefault(point_key(f["point_id"]), []).append(f["id"])
    try:
        connector = connector_for(_store_uri(scan["source"]), collection=scan["collection"], vector=vector_name)
        try:
            info = connector.describe()
            ids: list[Any] = []
            vectors: list[np.ndarray] = []
            tenants: list[str | None] = []
            texts: list[str] = []

            def take(pid: Any, vec: Any, payload: dict[str, Any]) -> None:
                arr = None if vec is None else np.asarray(vec, dtype=np.float32)
                if arr is None or arr.shape != (info.dim,) or not np.isfinite(arr).all() or not arr.any():
                    return
                text = resolve_field(payload, field_map.text)
                ids.append(pid)
                vectors.append(arr)
                tenants.append(tenant_label(resolve_field(payload, field_map.tenant)))
                texts.append(redact_text(text, limit=TIP_CHARS) if isinstance(text, str) else "")

            for page, _ in connector.iter_batches(batch_size=512):
                for pid, vec, payload in zip(page.ids, page.vectors, page.payloads, strict=True):
                    take(pid, vec, payload)
                if len(ids) >= max_points:
                    break
            seen = {point_key(p) for p in ids}
            missing = [json.loads(k) for k in flagged_by_key if k not in seen]
            if missing:
                for point in connector.fetch(missing):
                    take(point.id, point.vectors.get(vector_name or "", next(iter(point.vectors.values()), None)),
                         point.payload)
        finally:
            connector.close()
    except Exception as e:  # unreachable store, missing credentials, dropped collection: report without a map
        log.debug("report map unavailable", exc_info=True)
        data.map_note = redact_text(f"the collection could not be read from {scan['source']} ({type(e).__name__}: {e})")
        return
    if len(ids) < 3:
        data.map_note = f"too few readable vectors ({len(ids)}) for a map"
        return
    matrix = np.stack(vectors)
    if info.distance.value == "cosine":
        matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    pca = PCA(n_components=2, random_state=seed)
    xy = pca.fit_transform(matrix)
    data.map = MapData(
        xy=xy,
        ids=ids,
        tenants=tenants,
        texts=texts,
        flagged=[flagged_by_key.get(point_key(p), []) for p in ids],
        explained=[float(v) for v in pca.explained_variance_ratio_],
        total_points=int(info.count),
        shown=len(ids),
    )


def _store_uri(source: str) -> str:
    """The ledger's redacted source as a URI again: an empty host loses its ``//`` when redacted
    (``qdrant+local:///data`` is stored as ``qdrant+local:/data``)."""
    scheme, sep, rest = source.partition(":")
    if sep and not rest.startswith("//") and rest.startswith("/"):
        return f"{scheme}://{rest}"
    return source


# -- rendering --------------------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _badge(severity: str) -> str:
    return f'<span class="sev sev-{_e(severity)}">{_e(severity.upper())}</span>'


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _frameworks(findings: list[dict[str, Any]]) -> tuple[list[list[str]], list[list[str]]]:
    owasp: dict[str, dict[str, Any]] = {}
    atlas: dict[str, dict[str, Any]] = {}
    for f in findings:
        for tag in f["tags"]:
            m = _TAG_RE.match(tag)
            if not m:
                continue
            target, key, name = (owasp, m.group(2), m.group(3)) if m.group(1) else (atlas, m.group(5), m.group(6))
            entry = target.setdefault(key, {"name": name, "count": 0, "rules": set(), "worst": "info"})
            entry["count"] += 1
            entry["rules"].add(f["rule_id"])
            if Severity(f["severity"]).rank > Severity(entry["worst"]).rank:
                entry["worst"] = f["severity"]

    def rows(target: dict[str, dict[str, Any]]) -> list[list[str]]:
        return [
            [f"<b>{_e(k)}</b>", _e(v["name"]), str(v["count"]), _badge(v["worst"]), _e(", ".join(sorted(v["rules"])))]
            for k, v in sorted(target.items())
        ]

    return rows(owasp), rows(atlas)


def _summary_tables(findings: list[dict[str, Any]]) -> str:
    by_sev = Counter(f["severity"] for f in findings)
    by_status = Counter(f["status"] for f in findings)
    detectors = sorted({f["detector"] for f in findings})
    det_rows = []
    for det in detectors:
        counts = Counter(f["severity"] for f in findings if f["detector"] == det)
        rules = sorted({f["rule_id"] for f in findings if f["detector"] == det})
        det_rows.append(
            [_e(det)]
            + [str(counts.get(s, 0) or "") for s in SEVERITY_ORDER]
            + [str(sum(counts.values())), _e(", ".join(rules))]
        )
    tenants = sorted({f["tenant"] for f in findings}, key=lambda t: (t is None, str(t)))
    ten_rows = []
    for t in tenants:
        counts = Counter(f["severity"] for f in findings if f["tenant"] == t)
        ten_rows.append(
            [_e(t if t is not None else "(none / collection)")]
            + [str(counts.get(s, 0) or "") for s in SEVERITY_ORDER]
            + [str(sum(counts.values()))]
        )
    cards = "".join(
        f'<div class="stat"><div class="num" style="color:{SEVERITY_COLOURS[s]}">{by_sev.get(s, 0)}</div>'
        f"<div>{_e(s)}</div></div>"
        for s in SEVERITY_ORDER
    )
    status_rows = [[_e(s), str(by_status.get(s, 0))] for s in REVIEW_STATUSES if by_status.get(s)]
    sev_headers = [s.upper() for s in SEVERITY_ORDER]
    return (
        f'<div class="stats">{cards}</div>'
        '<div class="grid">'
        "<section><h3>By detector</h3>"
        f'{_table(["detector", *sev_headers, "total", "rules"], det_rows, "summary")}</section>'
        f'<section><h3>By tenant</h3>{_table(["tenant", *sev_headers, "total"], ten_rows, "summary")}</section>'
        f'<section><h3>Review status</h3>{_table(["status", "findings"], status_rows, "summary")}</section>'
        "</div>"
    )


def _map_svg(m: MapData, findings_by_id: dict[int, dict[str, Any]]) -> str:
    width, height, pad = 900, 560, 24
    x, y = m.xy[:, 0], m.xy[:, 1]
    sx = (width - 2 * pad) / max(float(np.ptp(x)), 1e-9)
    sy = (height - 2 * pad) / max(float(np.ptp(y)), 1e-9)
    px = pad + (x - x.min()) * sx
    py = height - pad - (y - y.min()) * sy
    palette = ["#64748b", "#0d9488", "#7c3aed", "#ea580c", "#0284c7", "#65a30d", "#db2777", "#a16207"]
    tenant_colour: dict[str | None, str] = {}
    for t in m.tenants:
        if t not in tenant_colour:
            tenant_colour[t] = palette[len(tenant_colour) % len(palette)]
    plain, hot = [], []
    for i in range(len(m.ids)):
        flagged = m.flagged[i]
        worst = None
        if flagged:
            worst = max((findings_by_id[f]["severity"] for f in flagged if f in findings_by_id),
                        key=lambda s: Severity(s).rank, default=None)
        tip = f"point {m.ids[i]} · tenant {m.tenants[i] or '(none)'}"
        if flagged:
            rules = ", ".join(sorted({findings_by_id[f]["rule_id"] for f in flagged if f in findings_by_id}))
            tip += f" · findings: {rules}"
        if m.texts[i]:
            tip += f" · {m.texts[i]}"
        attrs = (
            f'cx="{px[i]:.1f}" cy="{py[i]:.1f}" data-point="{_e(json.dumps(m.ids[i]))}" '
            f'data-findings="{_e(",".join(map(str, flagged)))}" data-tip="{_e(tip)}"'
        )
        if worst:
            hot.append(
                f'<circle class="pt flagged" r="5" {attrs} fill="{SEVERITY_COLOURS[worst]}" stroke="#111" '
                f'stroke-width="1"><title>{_e(tip)}</title></circle>'
            )
        else:
            plain.append(
                f'<circle class="pt" r="2.2" {attrs} fill="{tenant_colour[m.tenants[i]]}" fill-opacity="0.55">'
                f"<title>{_e(tip)}</title></circle>"
            )
    legend = " ".join(
        f'<span class="legend"><i style="background:{c}"></i>{_e(t if t is not None else "(no tenant)")}</span>'
        for t, c in tenant_colour.items()
    ) + " " + " ".join(
        f'<span class="legend"><i class="ring" style="background:{SEVERITY_COLOURS[s]}"></i>flagged {s}</span>'
        for s in SEVERITY_ORDER
    )
    return (
        f'<svg id="map" viewBox="0 0 {width} {height}" role="img" aria-label="2-D PCA map of the collection">'
        f'<rect width="{width}" height="{height}" fill="#fbfbfd"/>{"".join(plain)}{"".join(hot)}</svg>'
        f'<div class="legendrow">{legend}</div>'
    )


def _neighbour_table(evidence: dict[str, Any]) -> str:
    for key in NEIGHBOUR_KEYS:
        value = evidence.get(key)
        if not isinstance(value, list) or not value:
            continue
        sims = evidence.get("similarities") or evidence.get("sims")
        rows = []
        for i, item in enumerate(value[:20]):
            if isinstance(item, dict):
                pid = item.get("id", item.get("point_id"))
                sim = item.get("similarity", item.get("sim", item.get("score")))
                ten = item.get("tenant")
            else:
                pid, ten = item, None
                sim = sims[i] if isinstance(sims, list) and i < len(sims) else None
            rows.append([_e(pid), "" if sim is None else f"{float(sim):.3f}", _e(ten or "")])
        more = f" (first 20 of {len(value)})" if len(value) > 20 else ""
        table = _table(["point", "similarity", "tenant"], rows, "mini")
        return f'<div class="nb"><b>{_e(key)}</b>{_e(more)}{table}</div>'
    return ""


def _cards(findings: list[dict[str, Any]]) -> str:
    out = []
    for f in findings[:MAX_CARDS]:
        point = "(collection)" if f["point_id"] is None else f["point_id"]
        score = "" if f["score"] is None else f"{f['score']:.4g}"
        threshold = "" if f["threshold"] is None else f" / threshold {f['threshold']:.4g}"
        tags = "".join(f'<span class="tag">{_e(t)}</span>' for t in f["tags"])
        reviews = "".join(
            f"<li>{_e(r['at'])} {_e(r['reviewer'])} → <b>{_e(r['verdict'])}</b>"
            + (f" — {_e(r['note'])}" if r["note"] else "")
            + "</li>"
            for r in f.get("reviews", [])
        )
        evidence = json.dumps(f["evidence"], indent=2, ensure_ascii=False, default=str)
        out.append(
            f'<article class="card" id="finding-{f["id"]}" data-severity="{_e(f["severity"])}" '
            f'data-status="{_e(f["status"])}" data-detector="{_e(f["detector"])}">'
            f'<header>{_badge(f["severity"])} <b>{_e(f["rule_id"])}</b> {_e(f["title"])}'
            f'<span class="status st-{_e(f["status"])}">{_e(f["status"])}</span>'
            + ('<span class="new">new</span>' if f.get("is_new") else "")
            + "</header>"
            f'<div class="meta">finding #{f["id"]} · detector {_e(f["detector"])} · point <code>{_e(point)}</code>'
            f' · tenant {_e(f["tenant"] or "—")} · score {_e(score)}{_e(threshold)} · confidence {_e(f["confidence"])}'
            f"</div><p>{_e(f['message'])}</p><div>{tags}</div>"
            f"{_neighbour_table(f['evidence'])}"
            f"<details><summary>evidence</summary><pre>{_e(evidence)}</pre></details>"
            + (f"<ul class='reviews'>{reviews}</ul>" if reviews else "")
            + "</article>"
        )
    if len(findings) > MAX_CARDS:
        out.append(f"<p class='note'>{len(findings) - MAX_CARDS} more findings: see `vecaudit findings list`.</p>")
    return "".join(out)


def _trend_svg(trend: list[dict[str, Any]], current: int) -> str:
    if not trend:
        return ""
    width, height, pad = 900, 220, 30
    top = max([t["findings"] for t in trend] + [1])
    bar = min((width - 2 * pad) / len(trend), 90.0)
    parts = []
    for i, t in enumerate(trend):
        x = pad + i * bar
        y = height - pad
        for sev in reversed(SEVERITY_ORDER):
            n = t["by_severity"].get(sev, 0)
            if not n:
                continue
            h = (height - 2 * pad) * n / top
            y -= h
            parts.append(
                f'<rect class="bar" x="{x + bar * 0.15:.1f}" y="{y:.1f}" width="{bar * 0.7:.1f}" height="{h:.1f}" '
                f'fill="{SEVERITY_COLOURS[sev]}"><title>scan {t["id"]}: {n} {sev}</title></rect>'
            )
        weight = "bold" if t["id"] == current else "normal"
        parts.append(
            f'<text x="{x + bar / 2:.1f}" y="{height - 10}" text-anchor="middle" font-size="11" '
            f'font-weight="{weight}">#{t["id"]}</text>'
            f'<text x="{x + bar / 2:.1f}" y="{max(y - 4, 12):.1f}" text-anchor="middle" font-size="11">'
            f'{t["findings"]}</text>'
        )
    return (
        f'<svg id="trend" viewBox="0 0 {width} {height}" role="img" aria-label="findings per scan">'
        f'{"".join(parts)}</svg>'
    )


_CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#111827;background:#f3f4f6}
header.top{background:#111827;color:#f9fafb;padding:18px 28px}
header.top h1{margin:0;font-size:20px}
header.top .sub{color:#9ca3af;font-size:13px}
main{padding:18px 28px;max-width:1280px;margin:auto}
section{background:#fff;border-radius:8px;padding:14px 18px;margin:0 0 16px;box-shadow:0 1px 2px #0001}
h2{font-size:17px;margin:0 0 10px}
h3{font-size:14px;margin:4px 0 8px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(540px,1fr));gap:12px}
.grid section{box-shadow:none;border:1px solid #e5e7eb}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e5e7eb;vertical-align:top}
th{background:#f9fafb;font-weight:600}
table.mini{width:auto;margin-top:4px}
.stats{display:flex;gap:12px;margin-bottom:12px}
.stat{flex:1;background:#f9fafb;border-radius:6px;padding:8px;text-align:center}
.num{font-size:26px;font-weight:700}
.sev{display:inline-block;border-radius:4px;padding:0 6px;font-size:11px;font-weight:700;color:#fff}
.sev-critical{background:#7f1d1d}
.sev-high{background:#dc2626}
.sev-medium{background:#f59e0b}
.sev-low{background:#3b82f6}
.sev-info{background:#9ca3af}
.card{border:1px solid #e5e7eb;border-radius:6px;padding:10px 12px;margin:8px 0}
.card header{font-size:14px}
.status{float:right;font-size:12px;border:1px solid #d1d5db;border-radius:10px;padding:0 8px}
.st-false_positive,.st-accepted,.st-resolved{color:#6b7280}
.st-confirmed,.st-quarantined{color:#b91c1c}
.new{float:right;margin-right:8px;font-size:11px;background:#dcfce7;color:#166534;border-radius:10px;padding:0 8px}
.meta{color:#4b5563;font-size:12px;margin:4px 0}
.tag{display:inline-block;font-size:11px;background:#eef2ff;color:#3730a3;border-radius:4px;
padding:0 6px;margin:0 4px 4px 0}
pre{background:#f9fafb;padding:8px;overflow:auto;max-height:320px;font-size:12px}
.note{color:#92400e;background:#fffbeb;border:1px solid #fde68a;padding:8px;border-radius:6px}
#map{width:100%;height:auto;border:1px solid #e5e7eb;border-radius:6px}
#trend{width:100%;height:auto}
.legendrow{font-size:12px;margin-top:6px}
.legend{margin-right:12px;white-space:nowrap}
.legend i{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:4px;vertical-align:middle}
.legend i.ring{outline:1px solid #111}
#tip{position:fixed;pointer-events:none;background:#111827;color:#f9fafb;
font-size:12px;padding:6px 8px;border-radius:4px;max-width:420px;display:none;z-index:10}
.pt.flagged{cursor:pointer}
.filters{margin:6px 0 10px;font-size:13px}
.filters select{margin-right:10px}
.card.hidden{display:none}
.card.focus{outline:3px solid #6366f1}
"""

_JS = """
(function(){
  var tip=document.getElementById('tip');
  var map=document.getElementById('map');
  if(map){
    map.addEventListener('mousemove',function(ev){
      var t=ev.target;
      if(t&&t.classList&&t.classList.contains('pt')){tip.textContent=t.getAttribute('data-tip');
        tip.style.display='block';tip.style.left=(ev.clientX+12)+'px';tip.style.top=(ev.clientY+12)+'px';}
      else{tip.style.display='none';}
    });
    map.addEventListener('mouseleave',function(){tip.style.display='none';});
    map.addEventListener('click',function(ev){
      var t=ev.target;if(!t||!t.getAttribute)return;var ids=(t.getAttribute('data-findings')||'').split(',');
      if(!ids[0])return;var card=document.getElementById('finding-'+ids[0]);
      if(card){document.querySelectorAll('.card.focus').forEach(function(c){c.classList.remove('focus');});
        card.classList.add('focus');card.scrollIntoView({behavior:'smooth',block:'center'});}
    });
  }
  var sev=document.getElementById('f-sev'),st=document.getElementById('f-status'),det=document.getElementById('f-det');
  function apply(){var shown=0;document.querySelectorAll('.card').forEach(function(c){
    var ok=(!sev.value||c.dataset.severity===sev.value)&&(!st.value||c.dataset.status===st.value)&&
      (!det.value||c.dataset.detector===det.value);c.classList.toggle('hidden',!ok);if(ok)shown++;});
    document.getElementById('f-count').textContent=shown+' shown';}
  [sev,st,det].forEach(function(el){if(el)el.addEventListener('change',apply);});
  if(sev)apply();
  document.body.setAttribute('data-ready','1');
})();
"""


def _options(values: list[str]) -> str:
    return '<option value="">all</option>' + "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)


def render(data: ReportData) -> str:
    """The report page as one HTML string."""
    scan = data.scan
    findings = sorted(data.findings, key=lambda f: (-Severity(f["severity"]).rank, f["rule_id"], f["id"]))
    owasp_rows, atlas_rows = _frameworks(findings)
    counts = scan.get("counts") or {}
    if counts.get("baseline"):
        change = "first scan of this collection (baseline)"
    elif "new" in counts:
        change = f"{counts['new']} new, {counts['changed']} changed, {counts['deleted']} deleted since the last scan"
    else:
        change = ""
    if data.map is not None:
        m = data.map
        by_id = {f["id"]: f for f in findings}
        flagged = sum(1 for f in m.flagged if f)
        map_html = (
            f'<p class="meta">PCA of {m.shown:,} of {m.total_points:,} points (first points in store order plus '
            f"every flagged one); explained variance {m.explained[0]:.1%} + {m.explained[1]:.1%}; "
            f"{flagged} flagged points ringed by severity. "
            "Hover for details, click a flagged point for its finding.</p>"
            + _map_svg(m, by_id)
        )
    else:
        map_html = f'<p class="note" id="map-missing">No map: {_e(data.map_note or "not requested")}.</p>'
    notes = "".join(f"<li>{_e(n)}</li>" for n in scan.get("notes") or [])
    detectors = ", ".join(d.get("name", "?") for d in scan.get("detectors") or [])
    framework_headers = ["id", "name", "findings", "worst", "rules"]
    body = f"""
<header class="top"><h1>vecaudit report — {_e(scan['collection'])}, scan #{scan['id']}</h1>
<div class="sub">{_e(data.collection_key)} · {_e(scan['status'])} · started {_e(scan['started_at'])} ·
{scan['points_scanned']:,} points · {_e(change)} · generated {_e(data.generated_at)} by vecaudit {_e(__version__)}</div>
</header>
<main>
<section id="summary"><h2>Summary: {len(findings)} findings</h2>{_summary_tables(findings)}
<p class="meta">Detectors: {_e(detectors)}{' · incremental scan' if scan.get('incremental') else ''}</p>
{f'<ul class="meta">{notes}</ul>' if notes else ''}</section>
<section id="frameworks"><h2>Framework mapping</h2><div class="grid">
<section><h3>OWASP Top 10 for LLM Applications 2025</h3>{_table(framework_headers, owasp_rows, "fw")}</section>
<section><h3>MITRE ATLAS</h3>{_table(framework_headers, atlas_rows, "fw")}</section></div></section>
<section id="map-section"><h2>Map of the collection</h2>{map_html}</section>
<section id="trend-section"><h2>Trend across scans of this collection</h2>{_trend_svg(data.trend, scan['id'])}
{_table(['scan', 'started', 'status', 'points', 'findings', *[s.upper() for s in SEVERITY_ORDER]],
        [[f"#{t['id']}" + (' (incremental)' if t['incremental'] else ''), _e(t['started_at']), _e(t['status']),
          f"{t['points']:,}", str(t['findings'])] + [str(t['by_severity'].get(s, 0) or '') for s in SEVERITY_ORDER]
         for t in data.trend], 'trend')}</section>
<section id="findings"><h2>Findings</h2>
<div class="filters">severity <select id="f-sev">{_options(SEVERITY_ORDER)}</select>
status <select id="f-status">{_options(sorted({f['status'] for f in findings}))}</select>
detector <select id="f-det">{_options(sorted({f['detector'] for f in findings}))}</select>
<span id="f-count"></span></div>
{_cards(findings)}</section>
</main><div id="tip"></div>"""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<title>vecaudit — {_e(scan['collection'])} scan {scan['id']}</title><style>{_CSS}</style></head>"
        f"<body>{body}<script>{_JS}</script></body></html>\n"
    )


def write_report(
    ledger: Ledger, scan_id: int, path: str, *, with_map: bool = True, map_points: int = 5000
) -> ReportData:
    """Collect, map and render the report of ``scan_id`` into ``path``; returns what was rendered."""
    data = collect(ledger, scan_id)
    if with_map:
        with ledger.session() as s:
            scan = s.get(ScanRow, scan_id)
            assert scan is not None
            coll = s.get(CollectionRow, scan.collection_id)
            vector_name = coll.vector_name if coll is not None else None
        load_map(data, vector_name=vector_name, max_points=map_points)
    else:
        data.map_note = "map disabled (--no-map)"
    # a lone surrogate from a store is written escaped rather than failing the report
    with open(path, "w", encoding="utf-8", errors="backslashreplace") as fh:
        fh.write(render(data))
    return data
