"""Property-based tests (Hypothesis) of the connector boundary: arbitrary Unicode payloads and ids, including lone
surrogates, NUL, control characters and nested dicts/lists, never crash the sanitiser, the hashes or
``resolve_batch``, and a scan of a JSONL export holding them completes and flags exactly the unsafe points."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.batching import resolve_batch
from auditor.cli.main import cli
from auditor.hashing import canonical_json, payload_hash, point_states, text_hash, vector_hash
from auditor.textsafety import ID_TYPE, MAX_ID_JSON, TEXT, TOO_DEEP, safe_id, safe_payload, safe_points, safe_text
from auditor.types import FieldMap, PointBatch

UNSAFE = re.compile("[\x00\ud800-\udfff]")
SPECIALS = ["\ud800", "\udc80", "\udfff", "\x00", "\x1b[31m", "\x07", "\u202e", "\ufeff", "\ud83d\ude00", "😀"]

# every code point, surrogates and controls included, with the usual suspects mixed in often
chars = st.characters(exclude_categories=())
texts = st.lists(st.one_of(chars, st.sampled_from(SPECIALS)), max_size=12).map("".join)
scalars = st.one_of(texts, st.integers(), st.floats(), st.booleans(), st.none())
payload_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4), max_leaves=12
)
payloads = st.dictionaries(texts, payload_values, max_size=5)
ids = st.one_of(
    st.integers(), st.integers(min_value=2**63, max_value=2**200), st.floats(), texts, st.binary(max_size=8),
    st.text(alphabet=chars, min_size=40, max_size=400),
    st.none(), st.booleans(), st.lists(st.integers(), max_size=3), st.dictionaries(texts, st.integers(), max_size=2),
)
vectors = st.one_of(
    st.none(),
    st.lists(st.floats(width=32), min_size=4, max_size=4),
    st.lists(st.floats(), min_size=1, max_size=6),
    texts,
    st.lists(texts, max_size=3),
    st.lists(st.integers(), min_size=4, max_size=4),
)


def strings_and_keys(value: Any) -> list[str]:
    """Every string in a payload, keys included, at any depth."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings_and_keys(k), *strings_and_keys(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in strings_and_keys(v)]
    return []


@given(payloads)
@settings(max_examples=300, deadline=None)
def test_safe_payload_leaves_nothing_unencodable_and_reports_every_repair(payload: dict[str, Any]) -> None:
    clean, repairs, more = safe_payload(payload)
    json.dumps(clean, ensure_ascii=False, sort_keys=True).encode("utf-8")  # strict: raises on any surrogate
    assert not [s for s in strings_and_keys(clean) if UNSAFE.search(s)]
    unsafe_before = any(UNSAFE.search(s) for s in strings_and_keys(payload))
    assert bool(repairs) == unsafe_before and (more == 0 or len(repairs) == 20)
    assert all(r.kind == TEXT and r.detail and all(d.startswith("\\u") for d in r.detail) for r in repairs)
    if not unsafe_before:
        assert clean is payload  # a clean payload is not copied
    again, repairs_again, _ = safe_payload(clean)
    assert again is clean and not repairs_again
    assert len(payload_hash(clean)) == 32 and len(payload_hash(payload)) == 32


def test_a_repair_deep_in_a_payload_names_a_bounded_path() -> None:
    nested: Any = "x\ud800"
    for i in range(300):
        nested = {f"level{i}": [nested]}
    _, repairs, _ = safe_payload(nested)
    (repair,) = repairs
    assert repair.path.startswith("level299[0].level298") and repair.path.endswith("level0[0]")
    assert len(repair.path) <= 241 and repair.detail == ("\\ud800",)
    # deeper than Python can walk: the point stays, as an outline of its payload, and is flagged
    for i in range(300, 3000):
        nested = {f"level{i}": [nested]}
    safe = safe_points([1], [{"text": "kept?", "deep": nested}])
    assert safe.payloads == [{"_nested_too_deep": {"text": "str", "deep": "dict"}}]
    assert safe.repairs[0].repairs[0].kind == TOO_DEEP


@given(texts)
def test_safe_text_escapes_each_unsafe_character_as_its_json_spelling(text: str) -> None:
    clean, found = safe_text(text)
    clean.encode("utf-8")
    assert "\x00" not in clean and (clean == text) == (not found)
    lone = [c for c in UNSAFE.findall(text)]
    assert {escape for escape in found} <= {f"\\u{ord(c):04x}" for c in lone}
    assert text_hash(clean) is not None and text_hash(text) is not None


@given(st.lists(payloads, max_size=6))
@settings(max_examples=200, deadline=None)
def test_safe_points_walks_exactly_the_payloads_that_need_it(page: list[dict[str, Any]]) -> None:
    safe = safe_points(list(range(len(page))), page)
    for payload, clean, repairs, canonical in zip(page, safe.payloads, safe.repairs, safe.canonical, strict=True):
        unsafe = any(UNSAFE.search(s) for s in strings_and_keys(payload))
        assert bool(repairs) == unsafe and (clean is payload) == (not unsafe)
        assert canonical == canonical_json(clean).encode("utf-8")
        assert not [s for s in strings_and_keys(json.loads(canonical)) if UNSAFE.search(s)]


@given(ids)
@settings(max_examples=300)
def test_safe_id_is_an_int_or_an_encodable_string(raw: Any) -> None:
    pid, repair = safe_id(raw)
    assert type(pid) in (int, str)
    if isinstance(pid, str):
        pid.encode("utf-8")
    assert len(json.dumps(pid)) <= MAX_ID_JSON  # always fits the ledger's point_key column
    fits = len(json.dumps(raw)) <= MAX_ID_JSON if isinstance(raw, str | int) else False
    if fits and ((type(raw) is int and -(2**63) <= raw < 2**64) or (isinstance(raw, str) and not UNSAFE.search(raw))):
        assert pid == raw and repair is None
    if isinstance(raw, str) and not fits:
        assert repair is not None and repair.kind == ID_TYPE and safe_id(raw + "x")[0] != pid
    if isinstance(raw, list | dict) or raw is None or isinstance(raw, bool):
        assert repair is not None and repair.kind == ID_TYPE


@given(st.lists(st.tuples(ids, vectors, payloads), max_size=8))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_resolve_batch_never_crashes_on_any_page(points: list[tuple[Any, Any, dict[str, Any]]]) -> None:
    page = PointBatch([p[0] for p in points], [p[1] for p in points], [p[2] for p in points])
    batch = resolve_batch(page, FieldMap(text="text", tenant="tenant", doc_id="doc"), dim=4)
    assert len(batch) == len(points) and batch.vectors.shape == (len(points), 4)
    assert all(type(i) in (int, str) for i in batch.ids)
    json.dumps(batch.payloads, ensure_ascii=False).encode("utf-8")
    list(point_states(batch.ids, batch.vector_hashes, batch.payload_hashes, batch.text_hashes, batch.tenants))
    assert vector_hash(None) == "none"


@given(st.lists(payloads, min_size=1, max_size=6), st.data())
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
def test_a_scan_of_an_export_with_arbitrary_payloads_completes(
    tmp_path: Path, generated: list[dict[str, Any]], data: st.DataObject
) -> None:
    rng = np.random.default_rng(len(generated))
    path = tmp_path / f"dump-{abs(hash(repr(generated)))}.jsonl"
    lines = []
    for i, payload in enumerate(generated):
        payload = {k: v for k, v in payload.items() if k not in ("id", "vector")}
        # json.dumps writes a lone surrogate as its \ud800 escape, exactly as a store's exporter would
        lines.append(json.dumps({**payload, "id": i, "vector": rng.standard_normal(4).tolist()}).encode())
    raw_line = data.draw(st.booleans())
    if raw_line:  # and one line with bytes that are not UTF-8 at all
        lines.append(b'{"id": 999, "vector": [1, 0, 0, 0], "text": "\xff\xfe broken \xc3"}')
    path.write_bytes(b"\n".join(lines) + b"\n")
    ledger = f"sqlite:///{tmp_path / (path.stem + '.db')}"
    result = CliRunner().invoke(cli, ["scan", f"file://{path}", "--text-field", "text", "--tenant-field", "tenant",
                                      "-d", "integrity", "-d", "provenance", "--format", "json",
                                      "--fail-on", "critical", "--ledger", ledger])
    assert result.exit_code == 0, result.stderr + result.stdout
    doc = json.loads(result.stdout)
    assert doc["scan"]["status"] == "completed" and doc["scan"]["points_scanned"] == len(lines)
    # what the export holds: JSON joins an escaped surrogate *pair* into the character it encodes
    stored = [json.loads(line) for line in lines[: len(generated)]]
    unsafe = {i for i, p in enumerate(stored) if any(UNSAFE.search(s) for s in strings_and_keys(p))}
    flagged = {f["point_id"] for f in doc["findings"] if f["rule_id"] == "VA110"}
    assert flagged == unsafe | ({999} if raw_line else set())


@given(payload_values)
@settings(max_examples=300)
def test_canonical_json_is_what_json_dumps_writes_with_its_settings(payload: Any) -> None:
    # the shared encoder must give the text the payload hashes were always taken of, byte for byte
    expected = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    assert canonical_json(payload) == expected
    mixed = {1: payload, "a": [payload], "b": {2.5: object}}  # keys that cannot be sorted together, a non-JSON value
    assert canonical_json(mixed) == json.dumps({"1": payload, "a": [payload], "b": {"2.5": object}},
                                               sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
