"""Every string read from a store is made safe at the connector boundary, before hashing, detectors and the ledger.

A Python string can hold code points that no UTF-8 encoder accepts (lone surrogates U+D800-U+DFFF, e.g. from a
JSON ``"\\ud800"`` escape, Qdrant's pickled local store, or invalid UTF-8 bytes decoded with ``surrogateescape``)
and NUL (U+0000), which PostgreSQL text refuses. One such character anywhere in one payload used to abort the whole
scan; anyone who can write one chunk could switch the audit off. Here each one is replaced by its escape *text*
(``\\ud800``, ``\\u0000``: six visible characters, the JSON spelling of the original) and reported as a
:class:`Repair` naming the field path, so the point is still scanned and flagged (integrity rule VA110). Two code
points forming a valid UTF-16 surrogate pair are joined into the character they encode (reported too).

Ids are normalised to ``int`` or ``str`` (the :data:`~auditor.types.PointId` contract): integral floats become
ints, byte strings are decoded, anything else (nested, null, boolean, fractional) becomes its JSON text and is
reported (rule VA112).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from auditor.hashing import canonical_json

#: Characters no UTF-8 encoder (lone surrogates) or no PostgreSQL text column (NUL) accepts.
_UNSAFE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
#: Field path components and samples are bounded: a key or id can be megabytes long.
_MAX_COMPONENT = 80
_MAX_SAMPLES = 5
#: Repairs reported per point (the rest are counted in ``Repairs.more``).
MAX_REPAIRS = 20
#: The longest id (its JSON form) and tenant label kept as they are; the ledger's columns hold 300 characters.
MAX_ID_JSON = 256
MAX_LABEL = 200

TEXT = "text"
ID_TYPE = "id-type"
TOO_DEEP = "too-deep"


@dataclass(frozen=True)
class Repair:
    """One value made safe: ``path`` of the field (``meta.tags[2]``, ``title (key)`` for a key, ``id``),
    ``kind`` (:data:`TEXT`, :data:`ID_TYPE` or :data:`TOO_DEEP`), ``detail``: the escaped characters replaced
    (``\\ud800``) or the id's original type, and for a text whether its NULs are ``utf16`` text read as UTF-8
    (:func:`utf16_as_utf8`)."""

    path: str
    kind: str
    detail: tuple[str, ...]
    utf16: bool = False


#: A run of characters each followed by a NUL: ASCII text stored as UTF-16 (little-endian) and read as UTF-8.
_UTF16_RUN = re.compile("(?:[^\x00]\x00){8,}")


def utf16_as_utf8(text: str) -> bool:
    """Whether the NULs of ``text`` are UTF-16 text read as UTF-8: runs of at least eight characters each followed
    by a NUL hold all of them but one (a chunk boundary can cut a run's first pair). Such text hides nothing: every
    character is still there, one apart."""
    nuls = text.count("\x00")
    if nuls < 8:
        return False
    in_runs = sum(len(m.group()) // 2 for m in _UTF16_RUN.finditer(text))
    return in_runs >= nuls - 1


def escape_char(char: str) -> str:
    """The escape text that replaces one unsafe character: ``\\ud800``, ``\\u0000``."""
    return f"\\u{ord(char):04x}"


def _join_pair(match: re.Match[str]) -> str:
    pair = match.group()
    return chr(0x10000 + ((ord(pair[0]) - 0xD800) << 10) + (ord(pair[1]) - 0xDC00))


def safe_text(text: str) -> tuple[str, tuple[str, ...]]:
    """``text`` with surrogate pairs joined and lone surrogates and NUL escaped; the escaped forms of what was
    replaced (empty when ``text`` was already safe, in which case ``text`` itself is returned)."""
    if _UNSAFE.search(text) is None:
        return text, ()
    found: list[str] = [escape_char(c) for c in dict.fromkeys(_UNSAFE.findall(text))]
    joined = _SURROGATE_PAIR.sub(_join_pair, text)
    return _UNSAFE.sub(lambda m: escape_char(m.group()), joined), tuple(found[:_MAX_SAMPLES])


#: The escape texts :func:`safe_text` writes for NUL and lone surrogates.
_ESCAPED = re.compile(r"\\u(?:0000|d[89a-f][0-9a-f]{2})")


def model_text(text: str) -> str:
    """``text`` as an embedding model read it before it was made safe: without the escape texts of NUL and lone
    surrogates. Tokenizers drop NUL (and the replacement character a lone surrogate becomes) as control
    characters, so a re-embedding of the escape text (six visible characters per NUL; a UTF-16 page read as UTF-8
    holds hundreds) would disagree with a stored vector that is faithful. A document that spells ``\\u0000``
    out loses those six characters here too: a small change to one embedding, against a false tamper alarm."""
    return _ESCAPED.sub("", text) if "\\u" in text else text


def _short(component: str) -> str:
    return component if len(component) <= _MAX_COMPONENT else component[: _MAX_COMPONENT - 1] + "…"


class _Walker:
    """Copy-on-write walk of one payload: containers are rebuilt only where something was replaced."""

    def __init__(self) -> None:
        self.repairs: list[Repair] = []
        self.more = 0

    def report(self, path: str, kind: str, detail: tuple[str, ...], utf16: bool = False) -> None:
        if len(path) > 3 * _MAX_COMPONENT:  # deep nesting: keep the start and the end of the path
            path = f"{path[:_MAX_COMPONENT]}…{path[-2 * _MAX_COMPONENT:]}"
        if len(self.repairs) < MAX_REPAIRS:
            self.repairs.append(Repair(path, kind, detail, utf16))
        else:
            self.more += 1

    def value(self, value: Any, path: str) -> Any:
        if isinstance(value, str):
            clean, found = safe_text(value)
            if found:
                self.report(path or "(value)", TEXT, found, utf16_as_utf8(value))
            return clean
        if isinstance(value, dict):
            return self.mapping(value, path)
        if isinstance(value, list | tuple):
            items = []
            for i, v in enumerate(value):  # a loop, not a comprehension: one frame less per nesting level
                items.append(self.value(v, f"{path}[{i}]"))
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return items if isinstance(value, list) else tuple(items)
        return value

    def mapping(self, payload: dict[Any, Any], path: str) -> dict[str, Any]:
        out: dict[str, Any] | None = None
        for i, (key, val) in enumerate(payload.items()):
            # JSON object keys are strings: a non-string key would break canonical (sorted-key) hashing
            skey = key if isinstance(key, str) else str(key)
            clean_key, found = safe_text(skey)
            where = f"{path}.{_short(clean_key)}" if path else _short(clean_key)
            if found:
                self.report(f"{where} (key)", TEXT, found)
            clean_val = self.value(val, where)
            if out is None and (clean_key is not key or clean_val is not val):
                out = dict(list(payload.items())[:i])
            if out is not None:
                out[clean_key] = clean_val
        return payload if out is None else out


def safe_payload(payload: Any) -> tuple[dict[str, Any], list[Repair], int]:
    """A payload safe to hash and store: a dict (a non-dict payload becomes ``{"_raw": payload}``) whose keys
    and strings, at any depth, are safe; the repairs made (at most :data:`MAX_REPAIRS`) and how many more.
    A payload that needed no repair is returned as it is (not copied)."""
    walker = _Walker()
    root = payload if isinstance(payload, dict) else {"_raw": payload}
    clean = walker.mapping(root, "")
    return clean, walker.repairs, walker.more


def _too_deep(payload: dict[Any, Any]) -> tuple[dict[str, Any], list[Repair], int]:
    """Stand-in for a payload nested too deep to walk: its top-level keys, each value's type, and a repair."""
    outline = {safe_text(str(k))[0]: type(v).__name__ for k, v in list(payload.items())[:MAX_REPAIRS]}
    return {"_nested_too_deep": outline}, [Repair("(payload)", TOO_DEEP, ("nested too deep to read",))], 0


def safe_id(raw: Any) -> tuple[int | str, Repair | None]:
    """A point id as ``int`` or safe ``str``, with the repair made (None when the id was already fine or only
    changed form losslessly: an integral float, a numpy scalar, a UTF-8 byte string).

    An id is also kept short enough to record: an integer beyond 64 bits (no store has those) or a string whose
    JSON form is longer than :data:`MAX_ID_JSON` becomes a bounded text (a prefix and a hash of the whole), so a
    megabyte id can neither overflow a ledger column nor make two long ids collide."""
    if isinstance(raw, bool):
        return _id_as_text(raw, f"a {type(raw).__name__}")
    if isinstance(raw, int):
        if -(2**63) <= raw < 2**64:
            return int(raw), None
        return _id_as_text(raw, "an integer beyond 64 bits")
    if isinstance(raw, str | bytes):
        text = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else str(raw)
        clean, found = safe_text(text)
        if len(json.dumps(clean)) > MAX_ID_JSON:
            return _bounded(clean), Repair("id", ID_TYPE, (f"a string of {len(text):,} characters",))
        return clean, Repair("id", TEXT, found) if found else None
    if hasattr(raw, "item") and not isinstance(raw, list | dict):  # numpy scalars
        try:
            item = raw.item()
        except (TypeError, ValueError):
            item = raw
        if item is not raw:
            return safe_id(item)
    if isinstance(raw, float) and math.isfinite(raw) and raw.is_integer() and -(2**63) <= raw < 2**64:
        return int(raw), None
    return _id_as_text(raw, f"a {type(raw).__name__}")


def _id_as_text(raw: Any, kind: str) -> tuple[str, Repair]:
    try:
        text = json.dumps(raw, sort_keys=True, default=str, allow_nan=True)
    except (TypeError, ValueError, RecursionError):  # mixed key types, cycles, extreme nesting
        text = repr(raw)
    clean, _ = safe_text(text)
    return (_bounded(clean) if len(json.dumps(clean)) > MAX_ID_JSON else clean), Repair("id", ID_TYPE, (kind,))


def _bounded(text: str, budget: int = MAX_ID_JSON - 40) -> str:
    """A prefix of ``text`` whose JSON form fits ``budget``, then ``…#`` and 16 hex digits of its SHA-256."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    used, cut = 0, 0
    for cut, char in enumerate(text):  # noqa: B007 - ``cut`` is read after the loop
        used += len(json.dumps(char)) - 2
        if used > budget:
            break
    return f"{text[:cut]}…#{digest}"


def bounded_label(label: str, limit: int = MAX_LABEL) -> str:
    """``label`` itself when it has at most ``limit`` characters, else a prefix, ``…#`` and a hash of the whole
    (distinct labels stay distinct; a ledger column never overflows)."""
    if len(label) <= limit:
        return label
    digest = hashlib.sha256(label.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{label[: limit - 18]}…#{digest}"


@dataclass(frozen=True)
class PointRepairs:
    """What the boundary changed on one point: the repairs (id first) and how many more were not listed."""

    repairs: tuple[Repair, ...] = ()
    more: int = 0

    def __bool__(self) -> bool:
        return bool(self.repairs)


NO_REPAIRS = PointRepairs()


@dataclass
class SafePoints:
    """One page after the boundary: ids (``int``/``str``), payloads, each point's repairs, and each payload's
    canonical JSON as UTF-8 (:func:`auditor.hashing.canonical_json`, computed once and reused for its hash)."""

    ids: list[int | str]
    payloads: list[dict[str, Any]]
    repairs: list[PointRepairs]
    canonical: list[bytes]


def safe_points(ids: Sequence[Any], payloads: Sequence[Any]) -> SafePoints:
    """Safe ids and payloads of one page, with each point's repairs (:data:`NO_REPAIRS` for a clean point).

    Fast path: the canonical JSON every payload is hashed from anyway keeps non-ASCII characters as they are and
    writes NUL as ``\\u0000``, so encoding it to UTF-8 (needed for the hash) fails on a lone surrogate and a
    substring test finds a NUL: a clean payload is cleared without walking it. Only a payload where either
    fires is walked (a false alarm, a literal backslash-u0000 in a text, just costs the walk)."""
    out = SafePoints([], [], [], [])
    for raw_id, raw_payload in zip(ids, payloads, strict=True):
        pid, id_repair = safe_id(raw_id)
        repairs: list[Repair] = []
        more = 0
        payload = raw_payload if isinstance(raw_payload, dict) else {"_raw": raw_payload}
        try:
            canonical = canonical_json(payload)
            try:
                encoded = canonical.encode("utf-8")
            except UnicodeEncodeError:
                encoded = b"\\u0000"  # walk below
            if b"\\u0000" in encoded:
                payload, repairs, more = safe_payload(payload)
                encoded = canonical_json(payload).encode("utf-8")
        except RecursionError:  # nested deeper than Python can walk: audited as one safe text of its outline
            payload, repairs, more = _too_deep(payload)
            encoded = canonical_json(payload).encode("utf-8")
        out.ids.append(pid)
        out.payloads.append(payload)
        out.canonical.append(encoded)
        if id_repair is None and not repairs:
            out.repairs.append(NO_REPAIRS)
        else:
            listed = ([id_repair] if id_repair else []) + repairs
            extra = max(0, len(listed) - MAX_REPAIRS)
            out.repairs.append(PointRepairs(tuple(listed[:MAX_REPAIRS]), more + extra))
    return out
