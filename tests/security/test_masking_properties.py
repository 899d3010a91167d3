"""Property tests (Hypothesis) of the one masking entry point: a generated secret or personal value of every kind
the `secrets` and `pii` detectors know, put anywhere in arbitrary Unicode text, never comes out of
``redact_text`` raw, whole or in part, with or without a length cut; no text (lone surrogates included) makes
``redact_text`` or ``mask_value`` raise."""

from __future__ import annotations

import random

import pytest
from canaries import GENERATORS, KINDS, generate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.masking import WITHHELD, TextMasker, mask_value, redact_text, text_maskers

#: Any code point, lone surrogates and control characters included.
ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=()), max_size=120)
#: Values in real text stand apart from the words around them (a key glued to a word is another word).
SEPARATORS = st.sampled_from([" ", "\n", "\t", " \n ", ". ", ", "])
FILLER = "The quarterly figures were reviewed by the committee. " * 40
#: A value is drawn from a seeded ``random.Random``: Hypothesis varies the seed (drawing each character through
#: Hypothesis itself would make the smallest example too large for its health checks).
SEEDS = st.integers(0, 2**64)
MASK_KINDS = ("token", "password", "email", "card", "iban", "phone", "national_id")
PROPERTY = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(seed=SEEDS, before=ANY_TEXT, after=ANY_TEXT, left=SEPARATORS, right=SEPARATORS)
def test_no_generated_value_survives_redact_text(kind: str, seed: int, before: str, after: str, left: str,
                                                right: str) -> None:
    planted = generate(kind, random.Random(seed))
    text = f"{before}{left}{planted.fragment}{right}{after}"
    masked = redact_text(text)
    assert not planted.leaks_in(masked), (planted.raw, masked)


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(seed=SEEDS, pad=st.integers(0, len(FILLER)), after=ANY_TEXT,
       cut=st.floats(0.0, 1.2))
def test_a_cut_never_exposes_part_of_a_value(kind: str, seed: int, pad: int, after: str, cut: float) -> None:
    """``limit`` cuts the masked text, wherever the value sits relative to the cut and the window read."""
    planted = generate(kind, random.Random(seed))
    text = f"{FILLER[:pad]} {planted.fragment}\n{after}"
    limit = int(cut * len(text))
    masked = redact_text(text, limit=limit)
    assert len(masked) <= limit
    assert not planted.leaks_in(masked), (planted.raw, limit, masked)


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY
@given(seed=SEEDS)
def test_mask_value_never_contains_the_value(kind: str, seed: int) -> None:
    planted = generate(kind, random.Random(seed))
    for mask_kind in MASK_KINDS:
        masked = mask_value(planted.raw, mask_kind)
        assert planted.raw not in masked and not any(p in masked for p in planted.pieces()), (mask_kind, masked)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.characters(exclude_categories=()), max_size=400), limit=st.integers(0, 500))
def test_arbitrary_unicode_never_crashes(text: str, limit: int) -> None:
    masked = redact_text(text)
    assert isinstance(masked, str) and not masked.startswith(WITHHELD.split("{")[0])
    assert len(redact_text(text, limit=limit)) <= limit
    for mask_kind in MASK_KINDS:
        assert isinstance(mask_value(text, mask_kind), str)


def test_every_kind_the_detectors_know_has_a_generator() -> None:
    """The generators cover what the code enumerates: each detect-secrets plugin, each newer token format, the
    password and generic rules, and each personal-data kind (a new kind without a generator fails here)."""
    from detectors.patterns.secret_formats import EXTRA_TOKEN_FORMATS
    from detectors.pii import PiiDetector
    from detectors.secrets import SecretsDetector

    secrets = SecretsDetector()
    expected = {p.secret_type for p in secrets._plugins} | {kind for kind, _ in EXTRA_TOKEN_FORMATS}
    expected |= {"Secret Keyword", "Password in prose", "High Entropy String"}
    expected |= {"email", "phone", "iban", "us_ssn", "uk_nino", "es_dni"} | {f"card:{n}" for n in
                                                                             ("visa", "mastercard", "amex",
                                                                              "discover", "jcb", "diners")}
    scanners = (secrets, PiiDetector())
    reported: set[str] = set()
    for kind in KINDS:
        planted = generate(kind, random.Random(kind))
        found = {h.kind for s in scanners for h in s.scan_text(f"\n{planted.fragment}\n")}
        found = {k if k.startswith("card:") else k.split(":")[0] for k in found}
        assert GENERATORS[kind][1] in found, (kind, found)
        reported |= found
    assert expected <= reported, sorted(expected - reported)


def test_maskers_come_from_the_registry_and_fail_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both content detectors are found through the registry; without any masker, or when one fails, the text
    is withheld rather than shown raw."""
    import auditor.masking as masking

    names = {type(m).__name__ for m in text_maskers()}
    assert {"SecretsDetector", "PiiDetector"} <= names
    assert all(isinstance(m, TextMasker) for m in text_maskers())
    secret = "deploy key AKIAQ3ZT7XK2LM9PW4RB"
    monkeypatch.setattr(masking, "text_maskers", lambda: ())
    masking._redact_cached.cache_clear()
    assert redact_text(secret) == WITHHELD.format(reason="no masking plugin is installed (the secrets and pii "
                                                         "detectors)")

    class Broken:
        def masked_spans(self, text: str) -> list[object]:
            raise RuntimeError("bug")

    monkeypatch.setattr(masking, "text_maskers", lambda: (Broken(),))
    masking._redact_cached.cache_clear()
    assert redact_text(secret) == WITHHELD.format(reason="masking failed (RuntimeError)")
    masking._redact_cached.cache_clear()
