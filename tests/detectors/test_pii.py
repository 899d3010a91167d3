"""pii on real documents with planted personal values of every listed kind; validators keep clean text clean."""

from __future__ import annotations

import pytest
from conftest import load_jsonl

from detectors.pii import PiiDetector

# kind -> (sentence, expected rule, expected masked form)
PLANTED = {
    "email": ("Write to oskar.brandt@fjordline-logistics.no today.", "VA531", "o***@***.no"),
    "phone_us": ("Call (415) 867-5309 after six.", "VA532", "(***) ***-**09"),
    "phone_uk": ("Office line +44 20 7946 0958.", "VA532", "+** ** **** **58"),
    "visa": ("Paid with 4539 1488 0343 6467.", "VA533", "**** **** **** 6467"),
    "amex": ("Amex 3714 496353 98431 on file.", "VA533", "**** ****** *8431"),
    "iban": ("IBAN GB82 WEST 1234 5698 7654 32 please.", "VA534", "GB** **** **** **** **** 32"),
    "ssn": ("SSN 219-09-9999 on the form.", "VA535", "***-**-**99"),
    "nino": ("NI number JG 10 37 59 A.", "VA535", "** ** ** *9 A"),
    "dni": ("DNI 12345678Z del titular.", "VA535", "*******8Z"),
}


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    return PiiDetector()


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_planted_value_is_found_and_masked(detector: PiiDetector, kind: str) -> None:
    sentence, rule_id, masked = PLANTED[kind]
    host = load_jsonl("wikipedia_en.jsonl")[len(kind)]["text"]
    hits = detector.scan_text(f"{host} {sentence}")
    assert [(h.rule.id, h.masked) for h in hits] == [(rule_id, masked)]


def test_invalid_numbers_are_not_reported(detector: PiiDetector) -> None:
    for text in ("Card 4539 1488 0343 6468 (bad Luhn).", "IBAN GB82 WEST 1234 5698 7654 33 (bad check).",
                 "SSN 000-12-3456 and 666-12-3456.", "DNI 12345678A", "mail me at info@example.com",
                 "The population was 13\u00a0104\u00a0177 in 2020.", "p = 0.6511772622175621"):
        assert not detector.scan_text(text), text


def test_clean_real_text_has_few_findings(detector: PiiDetector) -> None:
    docs = [r["text"] for n in ("wikipedia_en.jsonl", "pubmed.jsonl", "hotpotqa_retrieved.jsonl", "code.jsonl")
            for r in load_jsonl(n)]
    flagged = [t for t in docs if detector.scan_text(t)]
    assert len(flagged) <= len(docs) // 500, [t[:80] for t in flagged]
