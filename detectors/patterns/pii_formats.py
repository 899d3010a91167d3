"""Shapes and check-digit rules of personal identifiers (payment cards, IBANs, national ids) for the PII detector.
Check digits are a few lines each, so they are written here rather than pulling python-stdnum (LGPL)."""

from __future__ import annotations

import re

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}(?![\w-])")
#: RFC 2606 / RFC 6761 names reserved for documentation: addresses there are not anybody's data.
RESERVED_EMAIL_DOMAINS = re.compile(r"(?i)(?:^|\.)(?:example\.(?:com|org|net)|example|test|invalid|localhost)$")

CARD_CANDIDATE = re.compile(r"(?<![\d.,-])\d(?:[ -]?\d){12,18}(?![\d-]|[.,]\d)")
IBAN_CANDIDATE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
US_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
UK_NINO = re.compile(r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
ES_DNI = re.compile(r"\b(?P<prefix>[XYZ]?)(?P<digits>\d{7,8})-?(?P<letter>[A-Z])\b")
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"

# IBAN lengths by country (ISO 13616 registry, SWIFT release of 2024).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21,
    "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18,
    "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23,
    "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27,
    "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26,
    "UA": 29, "VG": 24, "XK": 20,
}


#: Characters that never occur inside a written phone number but do join table cells, ranges and
#: thousands groups that libphonenumber may otherwise accept (e.g. "13\u00a0104\u00a0177", "32.7-34.9/1000").
PHONE_REJECT = re.compile(r"[\n\r\t/*\u00a0\u202f\u2009]|\d\.\d")


def luhn_ok(digits: str) -> bool:
    """Luhn (mod 10) check of a digit string."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_brand(digits: str) -> str | None:
    """Card network from the issuer prefix and length, None when no network issues such a number."""
    n = len(digits)
    if digits[0] == "4" and n in (13, 16, 19):
        return "visa"
    two, four = int(digits[:2]), int(digits[:4])
    if n == 16 and (51 <= two <= 55 or 2221 <= four <= 2720):
        return "mastercard"
    if n == 15 and two in (34, 37):
        return "amex"
    if n in (16, 19) and (digits.startswith("6011") or two == 65 or 644 <= int(digits[:3]) <= 649):
        return "discover"
    if 16 <= n <= 19 and 3528 <= four <= 3589:
        return "jcb"
    if n == 14 and (two in (36, 38) or 300 <= int(digits[:3]) <= 305):
        return "diners"
    return None


def iban_ok(compact: str) -> bool:
    """ISO 13616 length for the country and ISO 7064 mod-97 check of an IBAN without spaces."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def dni_ok(prefix: str, digits: str, letter: str) -> bool:
    """Spanish DNI / NIE control letter (mod 23)."""
    if prefix:
        digits = str("XYZ".index(prefix)) + digits
        if len(digits) != 8:
            return False
    elif len(digits) != 8:
        return False
    return _DNI_LETTERS[int(digits) % 23] == letter
