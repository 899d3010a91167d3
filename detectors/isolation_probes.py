"""Live isolation probes (opt-in, ``vecaudit scan --probe``): run the tenant-filtered search the RAG app runs
for a sample of each tenant's points and report any hit of another tenant; plus the store's isolation posture."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.errors import ConfigError, ConnectorError
from auditor.findings import OWASP_SENSITIVE_INFO, OWASP_VECTOR_WEAKNESS, Finding, Rule
from auditor.types import Confidence, Severity, resolve_field, tenant_label

_TAGS = (OWASP_VECTOR_WEAKNESS, OWASP_SENSITIVE_INFO)
LEAK = Rule("VA441", "Tenant-filtered search returned another tenant's points", Severity.CRITICAL, Confidence.HIGH,
            _TAGS)
NO_TENANT_INDEX = Rule("VA442", "Tenant field has no tenant payload index", Severity.LOW, Confidence.HIGH, _TAGS)

#: config key (``ctx.settings.extra``) holding the app's filter as a JSON object with ``{tenant}`` placeholders
FILTER_KEY = "probe_filter"
PLACEHOLDER = "{tenant}"


def fill_filter(spec: Any, tenant: str) -> Any:
    """The filter with every ``{tenant}`` placeholder replaced: a string that *is* the placeholder becomes the
    tenant value itself, one that contains it gets it substituted."""
    if isinstance(spec, Mapping):
        return {k: fill_filter(v, tenant) for k, v in spec.items()}
    if isinstance(spec, list):
        return [fill_filter(v, tenant) for v in spec]
    if isinstance(spec, str):
        return tenant if spec == PLACEHOLDER else spec.replace(PLACEHOLDER, tenant)
    return spec


def default_filter(tenant_field: str) -> dict[str, Any]:
    """What most RAG apps run: ``must: tenant_field == tenant`` (Qdrant filter JSON)."""
    return {"must": [{"key": tenant_field, "match": {"value": PLACEHOLDER}}]}


class IsolationProbeDetector(Detector):
    """For up to ``sample_per_tenant`` points of every tenant, searches the store with the point's own stored
    vector and the tenant filter the app uses (config key ``probe_filter``, Qdrant filter JSON with
    ``{tenant}`` placeholders; default ``tenant_field == tenant``), ``limit`` hits per probe, and checks
    every hit's tenant field.

    VA441 (critical, one finding per leaking tenant, no point id): score = foreign hits seen over all
    probes of that tenant, threshold 1 — one foreign hit under the tenant's own filter is a leak, so the
    false-positive budget is zero. Evidence: the exact filter sent, the probe points and the foreign hits
    (ids, their tenants, scores — never their text).
    VA442 (low, collection level): a Qdrant server collection whose tenant field has no payload index or
    one without ``is_tenant`` (slower filtered search, no per-tenant storage layout). Local mode keeps no
    payload indexes, so posture there is recorded as a scan note instead of a finding.

    Opt-in: enabled by default so ``--probe`` alone switches it on, but ``skip_reason`` returns a reason
    unless ``ctx.settings.probe`` is true, because probes query the live store.
    """

    name = "isolation-probe"
    version = "1"
    description = "Opt-in (--probe): tenant-filtered searches must return only that tenant's points; store posture"
    rules = (LEAK, NO_TENANT_INDEX)
    requires = frozenset({"vectors", "tenant"})
    defaults: ClassVar[dict[str, Any]] = {"sample_per_tenant": 20, "limit": 10, "max_evidence": 20}

    def skip_reason(self, ctx: ScanContext) -> str | None:
        if not ctx.settings.probe:
            return "isolation probes are opt-in (--probe)"
        reason = super().skip_reason(ctx)
        if reason:
            return reason
        connector = ctx.connector
        if connector is None or "probe" not in type(connector).capabilities:
            name = type(connector).__name__ if connector is not None else "this source"
            return f"{name} cannot run filtered searches for probes"
        return None

    def begin(self, ctx: ScanContext) -> None:
        spec = ctx.settings.extra.get(FILTER_KEY)
        if spec is not None and not isinstance(spec, Mapping):
            raise ConfigError(f"{FILTER_KEY} must be a filter object (JSON), got {type(spec).__name__}")
        if spec is not None and PLACEHOLDER not in json.dumps(spec):
            raise ConfigError(f"{FILTER_KEY} has no {PLACEHOLDER} placeholder", hint="e.g. "
                              + json.dumps(default_filter(ctx.field_map.tenant or "tenant")))
        self._spec: dict[str, Any] = dict(spec) if spec is not None else default_filter(ctx.field_map.tenant or "")

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        connector = ctx.connector
        tenant_field = ctx.field_map.tenant
        if connector is None or not tenant_field:
            return
        yield from self._posture(ctx)
        valid = ctx.valid_mask()
        rng = random.Random(ctx.settings.seed)
        sample_size = int(self.params["sample_per_tenant"])
        limit = int(self.params["limit"])
        max_ev = int(self.params["max_evidence"])
        for tenant, rows in sorted(ctx.rows_by_tenant().items(), key=lambda kv: str(kv[0])):
            if tenant is None:
                continue
            usable = [r for r in rows if valid[r]]
            probes = sorted(rng.sample(usable, min(sample_size, len(usable))))
            query_filter = fill_filter(self._spec, tenant)
            foreign: list[dict[str, Any]] = []
            probed: list[Any] = []
            for row in probes:
                vector = np.asarray(ctx.table.vectors[row], dtype=np.float32)
                try:
                    hits = connector.probe_search(
                        vector, tenant_field=tenant_field, tenant=tenant, limit=limit, filter_spec=query_filter
                    )
                except ConnectorError as e:
                    raise ConnectorError(f"isolation probe for tenant {tenant!r} failed: {e}") from e
                probed.append(ctx.table.ids[row])
                for hit in hits:
                    hit_tenant = tenant_label(resolve_field(hit.payload, tenant_field))
                    if hit_tenant != tenant:
                        foreign.append({"probe_point": ctx.table.ids[row], "hit": hit.id, "hit_tenant": hit_tenant,
                                        "score": round(hit.score, 4)})
            if not probes:
                continue
            if foreign:
                foreign_tenants = sorted({str(h["hit_tenant"]) for h in foreign})
                yield Finding(
                    LEAK, self.name, None, float(len(foreign)),
                    f"search filtered to tenant {tenant!r} returned {len(foreign)} hit(s) of tenant(s) "
                    f"{', '.join(foreign_tenants)} over {len(probes)} probe(s)",
                    1.0,
                    {"filter": query_filter, "tenant_field": tenant_field, "probes": len(probes), "limit": limit,
                     "probe_points": probed[:max_ev], "foreign_tenants": foreign_tenants,
                     "foreign_hits": foreign[:max_ev], "foreign_hit_count": len(foreign)},
                    tenant, identity=f"leak:{tenant}",
                )
            else:
                ctx.note(f"isolation probe: tenant {tenant!r} clean over {len(probes)} probe(s) x {limit} hits")

    def _posture(self, ctx: ScanContext) -> Iterable[Finding]:
        assert ctx.connector is not None
        facts = ctx.connector.posture(tenant_field=ctx.field_map.tenant)
        not_checkable = facts.get("not_checkable_in_local_mode") or facts.get("not_checkable") or []
        for item in not_checkable:
            ctx.note(f"isolation posture: cannot check {item} in {facts.get('mode', 'this')} mode")
        if facts.get("tenant_index") is None:
            return
        if not facts.get("tenant_index") or not facts.get("tenant_index_is_tenant"):
            what = "no payload index" if not facts.get("tenant_index") else "a payload index without is_tenant"
            yield Finding(
                NO_TENANT_INDEX, self.name, None, 1.0,
                f"tenant field {ctx.field_map.tenant!r} has {what}; Qdrant's multitenancy setup indexes it with "
                "is_tenant=true",
                0.5, {"posture": facts}, None, identity="posture",
            )
