"""The detector contract (a specification, as in scikit-learn's estimator guide).

A detector is one class per rule family. Its ``name`` is its registry key; ``rules`` lists the stable
rule ids it can emit. ``__init__`` only stores keyword parameters declared in ``defaults`` (an unknown
name is an error that names it); validation happens in ``begin``. Scores are *higher = more suspicious*.

Lifecycle in one scan (see DESIGN.md "Data flow"):

1. ``skip_reason(ctx)`` — a reason not to run on this collection (e.g. no text field), else None;
2. ``begin(ctx)`` — once, before the first batch;
3. ``observe(batch, ctx)`` — pass 1, once per streamed :class:`~auditor.types.RecordBatch`;
4. ``finish(ctx)`` — pass 2, with the whole collection in ``ctx.table`` and the shared neighbour graph
   from ``ctx.graph()`` (built once for the largest ``neighbours_needed()`` of all detectors).

Both ``observe`` and ``finish`` return findings; evidence must never contain a raw secret.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from auditor.budget import DEFAULT_ALERT_BUDGET, DEFAULT_REVIEW_BUDGET
from auditor.errors import DetectorError
from auditor.findings import Finding, Rule
from auditor.types import RecordBatch

if TYPE_CHECKING:
    from auditor.context import ScanContext


class Detector(abc.ABC):
    """Base class of every detector; see the module docstring for the contract."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    rules: ClassVar[tuple[Rule, ...]] = ()
    #: Subset of {"vectors", "text", "tenant", "embedder", "graph"}.
    requires: ClassVar[frozenset[str]] = frozenset({"vectors"})
    #: Parameters and their defaults; ``__init__`` accepts exactly these names, each of its default's type
    #: (an integer passes for a float, a list for a tuple).
    defaults: ClassVar[Mapping[str, Any]] = {}
    #: The type of a parameter whose default is None (``{"queries_file": str}``); None stays allowed.
    param_types: ClassVar[Mapping[str, type]] = {}
    #: Whether ``vecaudit scan`` runs it when no ``--detector`` is given.
    enabled_by_default: ClassVar[bool] = True
    #: True only when ``observe``'s findings about a point depend on nothing but that point's record and the
    #: parameters, and ``finish`` needs no state gathered in ``observe``: then ``scan --incremental`` shows
    #: ``observe`` only new or changed points and carries the last scan's findings of the unchanged ones.
    pointwise_observe: ClassVar[bool] = False
    #: Rules whose findings are statistical judgements (a score against a threshold) and so share the
    #: detector's alert budget (auditor.budget); such a detector also takes ``alert_budget``, ``review_budget``
    #: and ``alert_floors`` (rule id -> score) parameters.
    budgeted_rules: ClassVar[frozenset[str]] = frozenset()
    #: Per budgeted rule, the score at or above which a finding keeps its severity whatever the budget.
    alert_floors: ClassVar[Mapping[str, float]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.budgeted_rules:
            cls.defaults = {"alert_budget": DEFAULT_ALERT_BUDGET, "review_budget": DEFAULT_REVIEW_BUDGET,
                            "alert_floors": {}, **cls.defaults}

    def observe_carried(self, findings: Iterable[Finding], ctx: ScanContext) -> None:  # noqa: B027 - optional
        """Incremental scans only, before ``finish``: the findings carried over for this (pointwise) detector
        from unchanged points, for detectors whose ``finish`` summarises what ``observe`` found."""

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise DetectorError(
                f"unknown parameter {unknown[0]!r} for detector {self.name!r}", hint=f"known parameters: {known}"
            )
        for key, value in params.items():
            self._check_type(key, value)
        floors = params.get("alert_floors") or {}
        bad = [k for k, v in floors.items() if k not in self.budgeted_rules or not isinstance(v, (int, float))
               or isinstance(v, bool)]
        if bad:
            raise DetectorError(
                f"alert_floors of detector {self.name!r}: {bad[0]!r} is not a budgeted rule with a numeric floor",
                hint=f"budgeted rules: {', '.join(sorted(self.budgeted_rules)) or 'none'}; "
                f"write it like `alert_floors = {{ {next(iter(sorted(self.budgeted_rules)), 'VA000')} = 0.9 }}`",
            )
        self.params: dict[str, Any] = {**self.defaults, **params}

    def _check_type(self, key: str, value: Any) -> None:
        """Refuse a parameter of the wrong type now, before any scan starts (not mid-scan in ``finish``)."""
        default = self.defaults[key]
        expected = self.param_types.get(key) or type(default)
        if (value is None and default is None) or expected is type(None):
            return  # None stays None; a None default with no declared type takes any value
        wanted = _TYPE_WORDS.get(expected, f"a {expected.__name__}")
        if expected is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif expected is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif expected in (list, tuple):
            kinds = {type(v) for v in default or ()}
            item = kinds.pop() if len(kinds) == 1 else None
            ok = isinstance(value, (list, tuple)) and (item is None or all(isinstance(v, item) for v in value))
            wanted = f"a list of {_ITEM_WORDS.get(item, 'values')}" if item is not None else wanted
        else:
            ok = isinstance(value, expected)
        if not ok:
            how = f"`{key} = {json.dumps(_jsonable(default))}`" if default is not None else f"{key} as {wanted}"
            raise DetectorError(
                f"parameter {key!r} of detector {self.name!r} must be {wanted}, got {json.dumps(_jsonable(value))}",
                hint=f"write it like {how} under [detectors.{self.name}]",
            )

    def floors(self) -> dict[str, float]:
        """Each budgeted rule's alert floor: the class's ``alert_floors`` with the ``alert_floors`` parameter over
        them."""
        return {**self.alert_floors, **{str(k): float(v) for k, v in (self.params.get("alert_floors") or {}).items()}}

    def rule(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    def skip_reason(self, ctx: ScanContext) -> str | None:
        """Why this detector cannot run on this scan (missing field map entry, ...), or None."""
        if "text" in self.requires and not ctx.field_map.text:
            return "no text field configured (--text-field)"
        if "tenant" in self.requires and not ctx.field_map.tenant:
            return "no tenant field configured (--tenant-field)"
        return None

    def neighbours_needed(self) -> int:
        """How many nearest neighbours per point ``finish`` wants from the shared graph (0 = none)."""
        return 0

    def begin(self, ctx: ScanContext) -> None:  # noqa: B027 - optional hook
        """Called once before pass 1."""

    def observe(self, batch: RecordBatch, ctx: ScanContext) -> Iterable[Finding]:
        """Pass 1: findings about the points of one batch."""
        return ()

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        """Pass 2: findings that need the whole collection."""
        return ()

    def config(self) -> dict[str, Any]:
        """What is recorded in the ledger with each scan: name, version and parameters."""
        config = {"name": self.name, "version": self.version, "params": _jsonable(self.params)}
        if self.budgeted_rules:
            config["alert_budget"] = {"rules": sorted(self.budgeted_rules), "floors": _jsonable(self.floors())}
        return config


_TYPE_WORDS = {float: "a number", int: "an integer", bool: "true or false", str: "a string", list: "a list",
               tuple: "a list", dict: "a table"}
_ITEM_WORDS = {float: "numbers", int: "integers", bool: "booleans", str: "strings"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
