"""Masking of secret and personal values for evidence, messages, logs and reports: a masked form shows the kind,
the length and at most a public prefix or a short tail that cannot reconstruct the value; the raw value never leaves.

``redact_text`` is the one entry point for free text (store text, messages, notes, evidence strings): every value
that a registered :class:`TextMasker` (the ``secrets`` and ``pii`` detectors) finds is replaced by its masked form.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

# Prefixes that vendors publish as the fixed marker of a token type: showing them names the kind of key
# without revealing any secret character. Longest first so "sk-ant-" wins over "sk-".
PUBLIC_PREFIXES = tuple(sorted((
    "AKIA", "ASIA", "ABIA", "ACCA", "AIza", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-",
    "xoxb-", "xoxp-", "xoxa-", "xoxs-", "xoxr-", "xoxo-", "sk-ant-", "sk-proj-", "sk-svcacct-", "sk-admin-", "sk-",
    "sk_live_", "rk_live_", "hf_", "gsk_", "npm_", "pypi-", "SG.", "sq0csp-", "GOCSPX-", "eyJ",
    "https://hooks.slack.com/", "-----BEGIN",
), key=len, reverse=True))

#: Values shorter than this show no characters at all, not even a public prefix or tail.
MIN_REVEAL_LENGTH = 12
_MASK = "*"
_MAX_STARS = 12


def _stars(n: int) -> str:
    return _MASK * max(3, min(n, _MAX_STARS))


def mask_secret(value: str) -> str:
    """``ghp_************ (40 chars)``: a published vendor prefix at most, never a secret character."""
    n = len(value)
    prefix = ""
    if n >= MIN_REVEAL_LENGTH:
        prefix = next((p for p in PUBLIC_PREFIXES if value.startswith(p) and len(p) <= n // 2), "")
    return f"{prefix}{_stars(n - len(prefix))} ({n} chars)"


def mask_email(value: str) -> str:
    """``j***@***.com``: first letter of the local part and the top-level domain only (a value that is not an
    address shows nothing of itself)."""
    local, at, domain = value.rpartition("@")
    if not at:
        return mask_secret(value)
    tld = domain.rsplit(".", 1)[-1] if "." in domain else ""
    if not (tld.isascii() and tld.isalpha() and len(tld) <= 24):
        tld = ""
    head = local[:1] if len(local) >= 4 else ""
    return f"{head}***@***.{tld}" if tld else f"{head}***@***"


def mask_digits(value: str, *, keep_tail: int = 4, keep_head_letters: bool = False) -> str:
    """Digits and letters replaced by ``*`` except the last ``keep_tail`` (as PCI DSS allows for cards);
    with ``keep_head_letters`` a leading country code (IBAN) stays. Separators keep the shape readable."""
    chars = [c for c in value if c.isalnum()]
    total = len(chars)
    if total < MIN_REVEAL_LENGTH:
        keep_tail = min(keep_tail, 2) if total >= 8 else 0
    head = 2 if keep_head_letters and value[:2].isalpha() else 0
    out = []
    seen = 0
    for c in value:
        if c.isalnum():
            reveal = seen < head or seen >= total - keep_tail
            out.append(c if reveal else _MASK)
            seen += 1
        elif c in " -./()+":
            out.append(c)
    return "".join(out)


def mask_value(value: str, kind: str) -> str:
    """The masked form of ``value`` for a finding of ``kind`` (email, phone, card, iban, national_id,
    password, or any secret kind)."""
    if kind == "email":
        return mask_email(value)
    if kind == "card":
        return mask_digits(value, keep_tail=4)
    if kind == "iban":
        return mask_digits(value, keep_tail=2, keep_head_letters=True)
    if kind in ("phone", "national_id"):
        return mask_digits(value, keep_tail=2)
    if kind == "password":
        return f"{_stars(len(value))} ({len(value)} chars)"
    return mask_secret(value)


# -- free text ---------------------------------------------------------------------------------------------------
class MaskedSpan(Protocol):
    """A sensitive value found in a text: ``text[start:end]`` is the raw value, ``masked`` its masked form."""

    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...

    @property
    def masked(self) -> str: ...


@runtime_checkable
class TextMasker(Protocol):
    """What a detector class implements to take part in :func:`redact_text`: the values of its kinds in a text,
    each already masked. Found through the detector registry, so a plugin's kinds are masked in reports too."""

    def masked_spans(self, text: str) -> Sequence[MaskedSpan]: ...


#: Marker put in place of a text that cannot be masked (fail closed: no masker, or a masker failed on it).
WITHHELD = "[text withheld: {reason}]"
#: Characters read past a ``limit`` cut, so a value that starts before the cut is still whole when it is
#: matched (a value cut in two no longer matches its pattern and would show its first part).
_CUT_MARGIN = 512
#: A cut never falls inside a run of non-space characters shorter than this (long tokens, PEM lines).
_MAX_TOKEN = 65_536
_CACHED_LENGTH = 1024
_NON_SPACE = re.compile(r"\S*")


@lru_cache(maxsize=1)
def text_maskers() -> tuple[TextMasker, ...]:
    """One instance (default parameters) of every registered detector that implements :class:`TextMasker`."""
    from auditor.registry import detector_classes  # the registry imports the plugins; masking sits below it

    classes = [cls for _, cls in sorted(detector_classes().items())]
    return tuple(cls() for cls in classes if isinstance(cls, type) and issubclass(cls, TextMasker))


def redact_text(text: str, *, limit: int | None = None) -> str:
    """``text`` with every secret and personal value the registered maskers find replaced by its masked form.

    With ``limit``: the first ``limit`` characters of the masked text (masked before the cut, so the cut never
    exposes the first part of a value). Never raises: a text that cannot be masked is withheld entirely.
    """
    if not text:
        return text
    if limit is None:
        return _redact_some(text)
    stop = max(limit, 0) + _CUT_MARGIN
    while True:
        # read to the end of the token the window ends in, so no value is cut by the window itself
        token = _NON_SPACE.match(text, stop, stop + _MAX_TOKEN)
        window = text[: token.end() if token else stop]
        masked = _redact_some(window)
        # a value the window cuts in two is raw at the window's end: keep it well past the part returned
        if len(window) == len(text) or len(masked) >= limit + _CUT_MARGIN:
            return masked[:limit]
        stop *= 2


def _redact_some(text: str) -> str:
    return _redact_cached(text) if len(text) <= _CACHED_LENGTH else _redact(text)


@lru_cache(maxsize=8192)
def _redact_cached(text: str) -> str:
    return _redact(text)


def _redact(text: str) -> str:
    try:
        maskers = text_maskers()
        if not maskers:
            return WITHHELD.format(reason="no masking plugin is installed (the secrets and pii detectors)")
        spans = sorted((s for m in maskers for s in m.masked_spans(text)), key=lambda s: (s.start, -s.end))
    except Exception as e:  # fail closed; no logging here, as the log formatter itself masks through this function
        return WITHHELD.format(reason=f"masking failed ({type(e).__name__})")
    out: list[str] = []
    pos = prev_start = 0
    for span in spans:
        if span.end <= pos:
            continue  # inside a value already masked
        if span.start < pos:
            # overlapping values of two maskers: the masked union, so no raw character of either is shown
            out[-1] = mask_secret(text[prev_start : span.end])
        else:
            out.append(text[pos : span.start])
            out.append(span.masked)
            prev_start = span.start
        pos = span.end
    out.append(text[pos:])
    return "".join(out)


def redact_json(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, tuples, scalars) with every string passed through
    :func:`redact_text`; keys are kept (they are names chosen by the code, not data)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_json(v) for v in value]
    return value


class MaskingFormatter(logging.Formatter):
    """A log formatter whose output (message, arguments and traceback) went through :func:`redact_text`."""

    _busy = threading.local()

    def format(self, record: logging.LogRecord) -> str:
        if getattr(self._busy, "active", False):
            # a record logged while masking (a plugin logging as it loads) must not recurse into masking
            return WITHHELD.format(reason="logged while masking")
        self._busy.active = True
        try:
            return redact_text(super().format(record))
        finally:
            self._busy.active = False
