"""Personal data in stored chunks: e-mail addresses, phone numbers (Google's libphonenumber rules), payment cards
(Luhn + issuer ranges), IBANs (mod 97) and national ids (US SSN, UK NINO, Spanish DNI/NIE); values masked at once."""

from __future__ import annotations

from typing import Any, ClassVar

from auditor.findings import OWASP_SENSITIVE_INFO, Rule
from auditor.types import Confidence, Severity
from detectors.patterns import pii_formats as fmt
from detectors.patterns.spans import Hit, SensitiveSpanDetector, drop_overlaps, make_hit

_TAGS = (OWASP_SENSITIVE_INFO,)
EMAIL = Rule("VA531", "E-mail address in text", Severity.LOW, Confidence.HIGH, _TAGS)
PHONE = Rule("VA532", "Phone number in text", Severity.LOW, Confidence.MEDIUM, _TAGS)
CARD = Rule("VA533", "Payment card number in text", Severity.HIGH, Confidence.HIGH, _TAGS)
IBAN = Rule("VA534", "Bank account (IBAN) in text", Severity.MEDIUM, Confidence.HIGH, _TAGS)
NATIONAL_ID = Rule("VA535", "National identity number in text", Severity.HIGH, Confidence.MEDIUM, _TAGS)


class PiiDetector(SensitiveSpanDetector):
    """E-mail addresses, phone numbers, payment cards, IBANs and national ids in point text.

    Every kind passes a validator before it counts: e-mails outside RFC 2606 documentation domains; phones
    that libphonenumber calls *valid* for one of ``phone_regions`` (national format) or in international
    ``+CC`` format; cards by Luhn and a real issuer prefix/length; IBANs by country length and mod 97; SSNs
    hyphenated outside unassigned areas, NINOs with legal prefixes, DNI/NIE by control letter. False-positive
    budget: at most 0.1% of clean dev documents (measured in benchmarks/content_quality.py).
    """

    name = "pii"
    version = "1"
    description = "E-mail addresses, phone numbers, payment cards, IBANs, national ids (masked, counts per tenant)"
    rules = (EMAIL, PHONE, CARD, IBAN, NATIONAL_ID)
    defaults: ClassVar[dict[str, Any]] = {"max_items": 10, "phone_regions": ("US", "GB"), "kinds": ()}
    noun = "personal value"

    def scan_text(self, text: str) -> list[Hit]:
        kinds = set(self.params["kinds"] or ("email", "phone", "card", "iban", "national_id"))
        hits: list[Hit] = []
        # Specific validated kinds first: drop_overlaps keeps the first of overlapping hits.
        if "card" in kinds:
            hits += self._cards(text)
        if "iban" in kinds:
            hits += self._ibans(text)
        if "national_id" in kinds:
            hits += self._national_ids(text)
        if "email" in kinds:
            hits += [make_hit(EMAIL, "email", text, *m.span(), mask_kind="email") for m in fmt.EMAIL.finditer(text)
                     if not fmt.RESERVED_EMAIL_DOMAINS.search(m.group().rsplit("@", 1)[1])]
        if "phone" in kinds:
            hits += self._phones(text)
        return drop_overlaps(hits)

    @staticmethod
    def _cards(text: str) -> list[Hit]:
        out = []
        for m in fmt.CARD_CANDIDATE.finditer(text):
            digits = "".join(c for c in m.group() if c.isdigit())
            if len(set(digits)) > 1 and fmt.luhn_ok(digits):
                brand = fmt.card_brand(digits)
                if brand:
                    out.append(make_hit(CARD, f"card:{brand}", text, *m.span(), mask_kind="card"))
        return out

    @staticmethod
    def _ibans(text: str) -> list[Hit]:
        out = []
        for m in fmt.IBAN_CANDIDATE.finditer(text):
            raw = m.group()
            compact = raw.replace(" ", "")
            # The candidate regex may run into a following word; trim to the country's length.
            want = fmt.IBAN_LENGTHS.get(compact[:2])
            if want is None or len(compact) < want:
                continue
            end, seen = m.start(), 0
            while seen < want:
                seen += raw[end - m.start()] != " "
                end += 1
            if fmt.iban_ok(compact[:want]):
                out.append(make_hit(IBAN, f"iban:{compact[:2]}", text, m.start(), end, mask_kind="iban"))
        return out

    @staticmethod
    def _national_ids(text: str) -> list[Hit]:
        out = [make_hit(NATIONAL_ID, "us_ssn", text, *m.span(), mask_kind="national_id")
               for m in fmt.US_SSN.finditer(text)]
        out += [make_hit(NATIONAL_ID, "uk_nino", text, *m.span(), mask_kind="national_id")
                for m in fmt.UK_NINO.finditer(text)]
        out += [make_hit(NATIONAL_ID, "es_dni", text, *m.span(), mask_kind="national_id")
                for m in fmt.ES_DNI.finditer(text) if fmt.dni_ok(m["prefix"], m["digits"], m["letter"])]
        return out

    def _phones(self, text: str) -> list[Hit]:
        import phonenumbers

        out: list[Hit] = []
        seen: set[tuple[int, int]] = set()
        for region in self.params["phone_regions"] or (None,):
            for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
                span = (m.start, m.end)
                digits = sum(c.isdigit() for c in m.raw_string)
                if span in seen or fmt.PHONE_REJECT.search(m.raw_string) or (
                        digits < 10 and not m.raw_string.startswith("+")):
                    continue
                seen.add(span)
                out.append(make_hit(PHONE, f"phone:{phonenumbers.region_code_for_number(m.number) or '?'}", text,
                                    m.start, m.end, mask_kind="phone"))
        return out
