"""Core value types: severity order, field resolution, batch resolution of odd vectors and payloads, fingerprints."""

from __future__ import annotations

import numpy as np
import pytest

from auditor.batching import resolve_batch
from auditor.errors import ConfigError, DetectorError
from auditor.findings import Finding, parse_point_id, point_key
from auditor.registry import detector_classes
from auditor.types import MISSING, FieldMap, PointBatch, Severity, resolve_field, tenant_label
from detectors.integrity import ZERO


def test_severity_orders_by_rank_not_position() -> None:
    assert Severity.CRITICAL > Severity.HIGH > Severity.MEDIUM > Severity.LOW > Severity.INFO
    assert Severity.parse(" High ") is Severity.HIGH
    with pytest.raises(ConfigError, match="use one of"):
        Severity.parse("urgent")


def test_dotted_fields_and_missing_values() -> None:
    payload = {"meta": {"body": "x", "n": None}, "a.b": 1}
    assert resolve_field(payload, "meta.body") == "x"
    assert resolve_field(payload, "meta.n") is None
    assert resolve_field(payload, "meta.zzz") is MISSING
    assert resolve_field(payload, "a.b") == 1
    assert [tenant_label(v) for v in (MISSING, None, "", "  ", "acme", 7, ["x"])] == [None] * 4 + ["acme", "7", None]


def test_mixed_dimensions_and_garbage_payloads_resolve_without_errors() -> None:
    page = PointBatch(
        ids=[1, "b", 3, 4],
        vectors=[[1.0, 2.0, 3.0], [1.0, 2.0], None, ["x", "y", "z"]],
        payloads=[{"text": "ok"}, "not a dict", {"text": 5}, {"text": None}],  # type: ignore[list-item]
    )
    batch = resolve_batch(page, FieldMap(text="text"), dim=3)
    assert batch.stored_dims.tolist() == [3, 2, 0, 0]
    assert batch.dim_ok.tolist() == [True, False, False, False]
    assert batch.texts == ["ok", None, None, None]
    assert batch.text_values[1] is MISSING and batch.payloads[1] == {"_raw": "not a dict"}
    assert np.all(batch.vectors[1:] == 0)


def test_finding_identity_ignores_score_and_follows_content() -> None:
    a = Finding(ZERO, "integrity", 7, score=1.0, message="m")
    b = Finding(ZERO, "integrity", 7, score=9.0, message="other", evidence={"x": 1})
    assert a.fingerprint("c", "v1") == b.fingerprint("c", "v1")
    assert a.fingerprint("c", "v1") != a.fingerprint("c", "v2")
    assert Finding(ZERO, "integrity", "7", 1.0, "m").fingerprint("c", "v1") != a.fingerprint("c", "v1")
    assert parse_point_id("42") == [42, "42"] and point_key(42) != point_key("42")


def test_unknown_detector_parameter_is_named() -> None:
    with pytest.raises(DetectorError, match="'norm_zz'"):
        detector_classes()["integrity"](norm_zz=3)


def test_point_keys_are_the_json_encoding_of_the_id() -> None:
    import json

    # ledgers written before the int shortcut hold json.dumps keys: every kind of id must keep its key
    for pid in (0, 7, -3, 10**20, True, False, "7", "abc", "ünï", None):
        assert point_key(pid) == json.dumps(pid), pid
