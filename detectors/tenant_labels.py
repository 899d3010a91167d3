"""Tenant-label faults: empty or non-string tenant values, values outside the declared tenant set, variants of
another tenant's value (``Acme`` vs ``acme ``, ``acme`` vs ``acmee``), and values that hide characters (a bidi
override that makes ``emca`` read as ``acme``, a zero-width space inside ``ac\u200bme``)."""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any, ClassVar

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.findings import OWASP_VECTOR_WEAKNESS, Finding, Rule
from auditor.types import MISSING, Confidence, PointId, RecordBatch, Severity

_TAGS = (OWASP_VECTOR_WEAKNESS,)
BAD_VALUE = Rule("VA401", "Tenant value is empty, null or not a string", Severity.HIGH, Confidence.HIGH, _TAGS)
UNDECLARED = Rule("VA402", "Tenant value outside the declared tenant set", Severity.HIGH, Confidence.HIGH, _TAGS)
VARIANT = Rule("VA403", "Tenant value is a variant of another tenant's value", Severity.HIGH, Confidence.HIGH, _TAGS)
HIDDEN = Rule("VA404", "Tenant value holds invisible or bidi control characters", Severity.HIGH, Confidence.HIGH,
              _TAGS)

_SEPARATORS = re.compile(r"[\s\-_.:/]+")


def hidden_characters(value: str) -> list[str]:
    """The invisible format characters in ``value`` (Unicode category Cf: bidi embeddings, overrides and isolates,
    zero-width spaces and joiners, the byte-order mark, soft hyphens, tag characters), each once, as ``U+XXXX``."""
    return list(dict.fromkeys(f"U+{ord(c):04X}" for c in value if unicodedata.category(c) == "Cf"))


def normalise_tenant(value: str) -> str:
    """Comparison key of a tenant label: Unicode NFKC, case-folded, invisible format characters, separators and
    spaces removed."""
    visible = "".join(c for c in unicodedata.normalize("NFKC", value) if unicodedata.category(c) != "Cf")
    return _SEPARATORS.sub("", visible.casefold())


def _edit_similar(a: str, b: str, min_ratio: float) -> bool:
    """Whether two normalised labels differ by a small, non-digit edit (``acme``/``acmee``, not ``t1``/``t2``).

    Digit-only differences are left out on purpose: ``team-1``/``team-2`` are usually distinct tenants.
    """
    if a == b or not a or not b:
        return False
    if re.sub(r"\d+", "#", a) == re.sub(r"\d+", "#", b):
        return False
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= min_ratio


class TenantLabelDetector(Detector):
    """Checks the tenant value of every point that has the tenant field (a missing field is VA108 of
    ``integrity``, not repeated here).

    * VA401 — null, empty/whitespace, boolean, list/dict; a number where most labelled points hold strings
      (a keyword filter ``tenant == "7"`` does not match the integer 7).
    * VA402 — with a declared tenant set (``--tenants``), a value not in it and not a variant of a member.
    * VA403 — a variant: the same label after case-folding, Unicode normalisation and removing invisible
      characters, spaces and separators, or (for misspellings) a ``difflib`` ratio >= ``min_ratio`` to a declared
      value, or to a value held by at least ``dominance`` times as many points when no set is declared. The most
      frequent raw spelling of a group is taken as canonical; the others are reported.
    * VA404 — a value holding invisible format characters (bidi controls, zero-width characters): a label is
      an identifier that a filter compares byte for byte, so what a person reads is not what matches
      (``\u202eemca`` displays as ``acme``). Reported whether or not it is also a variant.

    All scores are 1.0 (rule matched) against threshold 0.5. False-positive budget: zero on well-formed
    labels — exact-after-normalisation variants are never legitimate distinct tenants; the fuzzy match
    skips digit-only differences (``team1``/``team2``) and, without a declared set, needs a 10x size gap,
    so two established tenants with similar names are never reported.
    """

    name = "tenant-label"
    version = "1"
    description = "Empty/non-string tenant values, values outside the declared set, variants of another tenant"
    rules = (BAD_VALUE, UNDECLARED, VARIANT, HIDDEN)
    requires = frozenset({"tenant"})
    defaults: ClassVar[dict[str, Any]] = {"min_ratio": 0.8, "dominance": 10.0}

    def begin(self, ctx: ScanContext) -> None:
        self._labels: list[tuple[PointId, str]] = []
        self._numeric = 0
        self._numeric_points: list[tuple[PointId, Any]] = []

    def observe(self, batch: RecordBatch, ctx: ScanContext) -> Iterable[Finding]:
        field = ctx.field_map.tenant
        for pid, value in zip(batch.ids, batch.tenant_values, strict=True):
            if value is MISSING:
                continue  # VA108 (integrity)
            if isinstance(value, str) and value.strip():
                self._labels.append((pid, value))
                hidden = hidden_characters(value)
                if hidden:
                    names = ", ".join(f"{cp} {unicodedata.name(chr(int(cp[2:], 16)), '')}".strip() for cp in hidden)
                    yield Finding(
                        HIDDEN, self.name, pid, 1.0, f"tenant {value!r} holds invisible characters ({names})",
                        0.5, {"field": field, "value": repr(value), "characters": hidden,
                              "visible": "".join(c for c in value if unicodedata.category(c) != "Cf")},
                        value, identity=value,
                    )
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                self._numeric_points.append((pid, value))
            else:
                kind = "empty string" if isinstance(value, str) else ("null" if value is None else type(value).__name__)
                yield Finding(
                    BAD_VALUE, self.name, pid, 1.0, f"tenant field {field!r} is {kind}", 0.5,
                    {"field": field, "type": kind}, None, identity=kind,
                )

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        field = ctx.field_map.tenant
        if self._numeric_points and len(self._labels) > len(self._numeric_points):
            for pid, value in self._numeric_points:
                yield Finding(
                    BAD_VALUE, self.name, pid, 1.0,
                    f"tenant field {field!r} is a number ({value!r}) where most points hold strings", 0.5,
                    {"field": field, "type": type(value).__name__, "value": value}, str(value), identity="number",
                )
        counts = Counter(v for _, v in self._labels)
        canonical = self._canonical_map(counts, ctx.settings.tenants)
        declared = set(ctx.settings.tenants or ())
        for pid, value in self._labels:
            target = canonical.get(value)
            if target is not None:
                how = "same label after normalising case, invisible characters and separators" if (
                    normalise_tenant(value) == normalise_tenant(target)) else "near spelling"
                yield Finding(
                    VARIANT, self.name, pid, 1.0, f"tenant {value!r} looks like a variant of {target!r} ({how})", 0.5,
                    {"field": field, "value": value, "canonical": target, "match": how,
                     "points_with_value": counts[value], "points_with_canonical": counts.get(target, 0)},
                    value, confidence=Confidence.HIGH if how.startswith("same") else Confidence.MEDIUM,
                    identity=value,
                )
            elif declared and value not in declared:
                yield Finding(
                    UNDECLARED, self.name, pid, 1.0, f"tenant {value!r} is not one of the declared tenants", 0.5,
                    {"field": field, "value": value, "declared": sorted(declared)[:50],
                     "points_with_value": counts[value]},
                    value, identity=value,
                )

    def _canonical_map(self, counts: Counter[str], declared: tuple[str, ...] | None) -> dict[str, str]:
        """Raw value -> the canonical value it is a variant of (values that are canonical are absent)."""
        min_ratio = float(self.params["min_ratio"])
        out: dict[str, str] = {}
        if declared:
            by_key = {normalise_tenant(d): d for d in declared}
            for value in counts:
                if value in declared:
                    continue
                key = normalise_tenant(value)
                if key in by_key:
                    out[value] = by_key[key]
                    continue
                close = [d for k, d in by_key.items() if _edit_similar(key, k, min_ratio)]
                if len(close) == 1:
                    out[value] = close[0]
            return out
        groups: dict[str, list[str]] = {}
        for value in counts:
            groups.setdefault(normalise_tenant(value), []).append(value)
        heads: dict[str, tuple[str, int]] = {}
        for key, members in groups.items():
            members.sort(key=lambda v: (-counts[v], v))
            head = members[0]
            heads[key] = (head, sum(counts[m] for m in members))
            for other in members[1:]:
                out[other] = head
        dominance = float(self.params["dominance"])
        for key, (_head, total) in heads.items():
            bigger = [
                (h, t) for k, (h, t) in heads.items()
                if k != key and t >= dominance * total and _edit_similar(key, k, min_ratio)
            ]
            if len(bigger) == 1:
                for value in groups[key]:
                    out[value] = bigger[0][0]
        return out
