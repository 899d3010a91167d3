"""Masks the secrets and personal values inside a text excerpt that another detector puts in its evidence
(an injection span can quote a password or an e-mail address): evidence never carries a raw value."""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _scanners() -> tuple[Any, ...]:
    from detectors.pii import PiiDetector
    from detectors.secrets import SecretsDetector

    return SecretsDetector(), PiiDetector()


def redact_sensitive(text: str) -> str:
    """``text`` with every value the secrets and pii detectors find replaced by its masked form."""
    if not text:
        return text
    hits = [hit for scanner in _scanners() for hit in scanner.scan_text(text)]
    kept: list[Any] = []
    for hit in sorted(hits, key=lambda h: (h.start, -(h.end - h.start))):
        if not kept or hit.start >= kept[-1].end:
            kept.append(hit)
    for hit in reversed(kept):
        text = text[: hit.start] + hit.masked + text[hit.end :]
    return text
