"""Secrets in stored chunks: provider API keys and tokens, private keys, JWTs, passwords and key-like
high-entropy strings, found with detect-secrets' plugins plus a few newer formats; values are masked at once."""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any, ClassVar

from auditor.findings import OWASP_SENSITIVE_INFO, Rule
from auditor.types import Confidence, Severity
from detectors.patterns.secret_formats import EXTRA_TOKEN_FORMATS, KEY_CONTEXT, PROSE_PASSWORD
from detectors.patterns.spans import Hit, SensitiveSpanDetector, drop_overlaps, make_hit

_TAGS = (OWASP_SENSITIVE_INFO,)
PROVIDER_TOKEN = Rule("VA521", "API key or token of a known provider in text", Severity.HIGH, Confidence.HIGH, _TAGS)
PRIVATE_KEY = Rule("VA522", "Private key in text", Severity.CRITICAL, Confidence.HIGH, _TAGS)
JWT = Rule("VA523", "JSON Web Token in text", Severity.MEDIUM, Confidence.MEDIUM, _TAGS)
PASSWORD = Rule("VA524", "Password or credential assignment in text", Severity.HIGH, Confidence.MEDIUM, _TAGS)
GENERIC_SECRET = Rule("VA525", "High-entropy string next to a key-like word", Severity.MEDIUM, Confidence.LOW, _TAGS)

# detect-secrets plugins not used: IP addresses are not secrets; keyword and entropy plugins are driven
# below with our own context rules (their stock form needs a file name and quoted strings).
_SKIPPED_PLUGINS = {"IPPublicDetector", "KeywordDetector", "Base64HighEntropyString", "HexHighEntropyString"}
_RULE_BY_PLUGIN = {"PrivateKeyDetector": PRIVATE_KEY, "JwtTokenDetector": JWT, "BasicAuthDetector": PASSWORD}
_TOKEN = re.compile(r"[A-Za-z0-9+/=_\-]{20,}")
_TOKEN_TAIL = re.compile(r"[A-Za-z0-9_\-]*")
_STRIP = " \t\r\n\"'`=:,;()[]{}<>"
_PLACEHOLDER = re.compile(r"(?i)^(?:x+|\*+|\.+|-+|_+|#+|<[^>]*>|\{[^}]*\}|\$\{?\w+\}?|%\w+%|your[_\-]?\w*|"
                          r"changeme|password\d*|secret|example\w*|placeholder|redacted|none|null|true|false)$")


class SecretsDetector(SensitiveSpanDetector):
    """API keys, tokens, private keys, JWTs, passwords and key-like high-entropy strings in point text.

    Provider formats come from detect-secrets' regex plugins (AWS, GitHub, GitLab, Slack, Stripe, Twilio,
    SendGrid, npm, PyPI, OpenAI, Discord, Telegram, Azure, Artifactory, IBM, ...) plus newer formats in
    ``detectors/patterns/secret_formats.py``; passwords from detect-secrets' keyword regexes (config style)
    and a prose pattern, kept only when the value looks like a credential (>= 6 chars, has a digit or symbol,
    not a placeholder, not sequential); generic secrets need a key-like word within 40 characters before a
    token of >= 20 chars with letters and digits and Shannon entropy >= ``entropy_limit`` bits/char (hex
    strings: ``hex_entropy_limit``). False-positive budget: none on the clean dev corpora (wiki, PubMed,
    hotpotqa, emails, code answers; measured in benchmarks/content_quality.py).
    """

    name = "secrets"
    version = "1"
    description = "API keys, tokens, private keys, JWTs, passwords in text (masked evidence, counts per tenant)"
    rules = (PROVIDER_TOKEN, PRIVATE_KEY, JWT, PASSWORD, GENERIC_SECRET)
    defaults: ClassVar[dict[str, Any]] = {"max_items": 10, "entropy_limit": 3.7, "hex_entropy_limit": 3.0}
    noun = "secret"

    @cached_property
    def _plugins(self) -> list[Any]:
        from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
        from detect_secrets.plugins.base import RegexBasedDetector

        classes: list[Any] = list(get_mapping_from_secret_type_to_class().values())
        return [cls() for cls in classes
                if issubclass(cls, RegexBasedDetector) and cls.__name__ not in _SKIPPED_PLUGINS]

    @cached_property
    def _keyword_regexes(self) -> list[tuple[re.Pattern[str], int]]:
        from detect_secrets.plugins import keyword

        groups = {**keyword.CONFIG_DENYLIST_REGEX_TO_GROUP, **keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP}
        return list(groups.items())

    def scan_text(self, text: str) -> list[Hit]:
        hits = self._provider_hits(text)
        hits += self._password_hits(text)
        hits += self._generic_hits(text, hits)
        return drop_overlaps(hits)

    def _provider_hits(self, text: str) -> list[Hit]:
        from detect_secrets.plugins.jwt import JwtTokenDetector

        hits: list[Hit] = []
        for kind, pattern in EXTRA_TOKEN_FORMATS:
            hits += [make_hit(PROVIDER_TOKEN, kind, text, *m.span(), mask_kind="token") for m in pattern.finditer(text)]
        for plugin in self._plugins:
            name = type(plugin).__name__
            rule = _RULE_BY_PLUGIN.get(name, PROVIDER_TOKEN)
            for regex in plugin.denylist:
                for m in regex.finditer(text):
                    start, end = _value_span(m)
                    if end - start < 8:
                        continue
                    if name == "JwtTokenDetector":
                        end = _token_end(text, end)
                        if not JwtTokenDetector.is_formally_valid(text[start:end]):
                            continue
                    if name == "PrivateKeyDetector":
                        end = _private_key_end(text, end)
                    elif rule is PROVIDER_TOKEN:
                        # fixed-length regexes (Stripe's 24 characters) stop inside today's longer keys
                        tail = _TOKEN_TAIL.match(text, end)
                        end = tail.end() if tail else end
                    mask_kind = "password" if rule is PASSWORD else "token"
                    hits.append(make_hit(rule, plugin.secret_type, text, start, end, mask_kind))
        return hits

    def _password_hits(self, text: str) -> list[Hit]:
        hits: list[Hit] = []
        offset = 0
        for line in text.splitlines(keepends=True):
            for regex, group in self._keyword_regexes:
                for m in regex.finditer(line):
                    start, end = m.span(group)
                    value = line[start:end].split()[0] if line[start:end].split() else ""
                    if _credential_like(value, line):
                        s = offset + start + line[start:end].index(value)
                        hits.append(make_hit(PASSWORD, "Secret Keyword", text, s, s + len(value), "password"))
            offset += len(line)
        for m in PROSE_PASSWORD.finditer(text):
            value = m.group("value").rstrip(".!?)")
            if _credential_like(value, text[max(0, m.start() - 80) : m.end()]):
                s = m.start("value")
                hits.append(make_hit(PASSWORD, "Password in prose", text, s, s + len(value), "password"))
        return hits

    @cached_property
    def _entropy(self) -> Any:
        from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString

        return Base64HighEntropyString().calculate_shannon_entropy

    def _generic_hits(self, text: str, found: list[Hit]) -> list[Hit]:
        hits: list[Hit] = []
        for m in _TOKEN.finditer(text):
            start, end = m.span()
            if any(not (end <= h.start or start >= h.end) for h in found):
                continue
            token = m.group()
            if not (re.search(r"\d", token) and re.search(r"[A-Za-z]", token)) or token.startswith(("http", "www")):
                continue
            if not KEY_CONTEXT.search(text[max(0, start - 40) : start]):
                continue
            is_hex = re.fullmatch(r"[0-9a-fA-F\-]+", token) is not None
            limit = float(self.params["hex_entropy_limit" if is_hex else "entropy_limit"])
            if self._entropy(token) >= limit:
                hits.append(make_hit(GENERIC_SECRET, "High Entropy String", text, start, end, "token"))
        return hits


def _value_span(m: re.Match[str]) -> tuple[int, int]:
    """The match without the delimiters some detect-secrets regexes include around the value."""
    start, end = m.span()
    value = m.group()
    lead = len(value) - len(value.lstrip(_STRIP))
    trail = len(value) - len(value.rstrip(_STRIP))
    return start + lead, end - trail


def _token_end(text: str, end: int) -> int:
    """Extend a lazily matched token (detect-secrets' JWT regex stops early) to its last token character."""
    while end < len(text) and (text[end].isalnum() or text[end] in "-_.+/="):
        end += 1
    return end


def _private_key_end(text: str, end: int) -> int:
    """Cover the whole PEM block after a ``BEGIN ... PRIVATE KEY`` header, so masking hides the key body."""
    close = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----").search(text, end)
    return close.end() if close else min(len(text), end + 4096)


def _credential_like(value: str, context: str) -> bool:
    """A stated password worth reporting: >= 6 chars, a digit or symbol, not a placeholder or variable."""
    from detect_secrets.filters.heuristic import (
        is_indirect_reference,
        is_prefixed_with_dollar_sign,
        is_sequential_string,
        is_templated_secret,
    )

    if len(value) < 6 or len(value) > 128 or _PLACEHOLDER.match(value) or len(set(value)) < 4:
        return False
    if not re.search(r"[\d\W_]", value) or (value.isdigit() and len(value) < 8):
        return False
    if re.search(r"[\[\](){}]|environ|getenv|process\.env", value) or re.fullmatch(r"[a-z_]+\.[a-z_.]+", value):
        return False  # a call, lookup or attribute path: code reading the secret, not the secret
    return not (is_templated_secret(value) or is_prefixed_with_dollar_sign(value) or is_sequential_string(value)
                or is_indirect_reference(context))
