"""Masking of secret and personal values for evidence, messages and logs: a masked form shows the kind, the
length and at most a public prefix or a short tail that cannot reconstruct the value; the raw value never leaves."""

from __future__ import annotations

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
    """``j***@***.com``: first letter of the local part and the top-level domain only."""
    local, _, domain = value.rpartition("@")
    tld = domain.rsplit(".", 1)[-1] if "." in domain else ""
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
