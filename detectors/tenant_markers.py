"""Tenant markers: per-tenant identifiers declared in config (customer names, email domains, account-number
patterns, planted canary strings) found in another tenant's text."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.errors import ConfigError
from auditor.findings import OWASP_SENSITIVE_INFO, OWASP_VECTOR_WEAKNESS, Finding, Rule
from auditor.types import Confidence, RecordBatch, Severity

_TAGS = (OWASP_VECTOR_WEAKNESS, OWASP_SENSITIVE_INFO)
CANARY = Rule("VA431", "Another tenant's canary string found", Severity.CRITICAL, Confidence.HIGH, _TAGS)
PATTERN = Rule("VA432", "Another tenant's identifier pattern found", Severity.HIGH, Confidence.MEDIUM, _TAGS)
NAME = Rule("VA433", "Another tenant's name or email domain found", Severity.MEDIUM, Confidence.MEDIUM, _TAGS)

#: config key (``ctx.settings.extra``) holding ``{tenant: {"names"|"domains"|"patterns"|"canaries": [...]}}``
CONFIG_KEY = "tenant_markers"
KINDS = ("names", "domains", "patterns", "canaries")
_RULE_OF = {"canaries": CANARY, "patterns": PATTERN, "names": NAME, "domains": NAME}


def mask(text: str) -> str:
    """A matched value as evidence may show it: two leading characters, length and a short hash."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{text[:2]}…({len(text)} chars, sha256:{digest})"


@dataclass(frozen=True)
class _Marker:
    owner: str
    kind: str
    label: str  # what evidence shows for the marker: names/domains/patterns as configured, canaries masked
    regex: re.Pattern[str]


def compile_markers(config: Any) -> list[_Marker]:
    """Validate the ``tenant_markers`` config and compile one regular expression per marker.

    Names match case-insensitively on word boundaries; domains match ``@domain`` or the bare domain (and its
    subdomains) on boundaries; canaries match literally; patterns are Python regular expressions.
    """
    if config is None:
        return []
    if not isinstance(config, Mapping):
        raise ConfigError(f"{CONFIG_KEY} must map tenant -> markers, got {type(config).__name__}")
    markers: list[_Marker] = []
    for tenant, spec in config.items():
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{CONFIG_KEY}[{tenant!r}] must be a mapping with keys {', '.join(KINDS)}")
        unknown = sorted(set(spec) - set(KINDS))
        if unknown:
            raise ConfigError(
                f"unknown marker kind {unknown[0]!r} for tenant {tenant!r}", hint=f"use {', '.join(KINDS)}"
            )
        for kind in KINDS:
            values = spec.get(kind) or []
            if isinstance(values, str) or not all(isinstance(v, str) and v for v in values):
                raise ConfigError(f"{CONFIG_KEY}[{tenant!r}][{kind!r}] must be a list of non-empty strings")
            for value in values:
                markers.append(_compile_one(str(tenant), kind, value))
    return markers


def _compile_one(owner: str, kind: str, value: str) -> _Marker:
    flags: int
    if kind == "names":
        source, flags, label = rf"(?<!\w){re.escape(value)}(?!\w)", re.IGNORECASE, value
    elif kind == "domains":
        domain = re.escape(value.lstrip("@"))
        source, flags, label = rf"(?<![\w.-]){domain}(?![\w-])|@(?:[\w-]+\.)*{domain}(?![\w-])", re.IGNORECASE, value
    elif kind == "canaries":
        source, flags, label = re.escape(value), 0, mask(value)
    else:
        source, flags, label = value, 0, value
    try:
        return _Marker(owner, kind, label, re.compile(source, flags))
    except re.error as e:
        raise ConfigError(f"bad pattern {value!r} for tenant {owner!r}: {e}", hint="patterns are Python regexes") from e


class TenantMarkerDetector(Detector):
    """Searches every point's text for the markers of *other* tenants (config key ``tenant_markers``).

    VA431 canary (critical): a string planted in one tenant's documents on purpose — finding it elsewhere
    is proof of a leak. VA432 pattern (high): an identifier format (account numbers, ticket prefixes).
    VA433 name/domain (medium): a customer name or email domain, which can appear legitimately (a
    supplier named in an email), hence medium confidence. Score = number of distinct foreign markers
    matched, threshold 1. False-positive budget: exactly the configured markers' own ambiguity — nothing
    is learned, so a marker that matches innocently must be made more specific in config. A point's own
    tenant's markers are never reported; points without a tenant are checked against all tenants.
    Evidence names the owning tenant and marker; matched text is masked (an account number is a secret).
    """

    name = "tenant-marker"
    version = "1"
    description = "Configured per-tenant identifiers (names, domains, patterns, canaries) in another tenant's text"
    rules = (CANARY, PATTERN, NAME)
    requires = frozenset({"text", "tenant"})
    defaults: ClassVar[dict[str, Any]] = {"max_evidence": 10}
    #: A point's verdict reads only its own text, tenant and the configured markers (part of the scan settings).
    pointwise_observe = True

    def skip_reason(self, ctx: ScanContext) -> str | None:
        reason = super().skip_reason(ctx)
        if reason:
            return reason
        if not ctx.settings.extra.get(CONFIG_KEY):
            return f"no tenant markers configured (config key {CONFIG_KEY!r})"
        return None

    def begin(self, ctx: ScanContext) -> None:
        self._markers = compile_markers(ctx.settings.extra.get(CONFIG_KEY))

    def observe(self, batch: RecordBatch, ctx: ScanContext) -> Iterable[Finding]:
        max_ev = int(self.params["max_evidence"])
        for pid, text, tenant in zip(batch.ids, batch.texts, batch.tenants, strict=True):
            if not text:
                continue
            hits: dict[str, list[dict[str, Any]]] = {}
            for marker in self._markers:
                if marker.owner == tenant:
                    continue
                found = marker.regex.search(text)
                if found is None:
                    continue
                rule_id = _RULE_OF[marker.kind].id
                hits.setdefault(rule_id, []).append({
                    "owner_tenant": marker.owner, "kind": marker.kind, "marker": marker.label,
                    "matched": mask(found.group(0)) if marker.kind in ("patterns", "canaries") else found.group(0),
                    "offset": found.start(),
                })
            for rule in (CANARY, PATTERN, NAME):
                matches = hits.get(rule.id)
                if not matches:
                    continue
                owners = sorted({m["owner_tenant"] for m in matches})
                yield Finding(
                    rule, self.name, pid, float(len(matches)),
                    f"text of tenant {tenant!r} contains {len(matches)} marker(s) of tenant(s) {', '.join(owners)}",
                    1.0, {"owner_tenants": owners, "from_tenant": owners[0], "matches": matches[:max_ev]}, tenant,
                )
