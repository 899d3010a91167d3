"""secrets on real documents with planted credentials of every listed kind; none reported on clean real text."""

from __future__ import annotations

import json

import pytest
from conftest import load_jsonl

from detectors.secrets import SecretsDetector

JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MjQyIn0.Zx9kP2mQ7rT1vW4yB8cD3fG6hJ0kL5nM9pR2sU4wXyA"
# Generated for this test (not real credentials): kind -> (sentence, raw value, expected rule).
PLANTED = {
    "aws": ("Upload with AKIAQ3ZT7XK2LM9PW4RB before noon.", "AKIAQ3ZT7XK2LM9PW4RB", "VA521"),
    "github": ("CI token ghp_Q7vX2mR9kL4pT8wZ1cN6bJ3hF5dS0aYgUeKi", "ghp_Q7vX2mR9kL4pT8wZ1cN6bJ3hF5dS0aYgUeKi",
               "VA521"),
    "slack": ("Bot: xoxb-284301944125-3924719237142-Hq2bXk9LmP3rT7vW1yN4cZ8d",
              "xoxb-284301944125-3924719237142-Hq2bXk9LmP3rT7vW1yN4cZ8d", "VA521"),
    "stripe": ("stripe.api_key = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc'", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "VA521"),
    "anthropic": ("key sk-ant-api03-" + "Zq8" * 31 + "AA in env", "sk-ant-api03-" + "Zq8" * 31 + "AA", "VA521"),
    "google": ("maps AIzaSyD3kL9mQ2pR7tV1wX4yZ6bC8dF0gH2jK5x here", "AIzaSyD3kL9mQ2pR7tV1wX4yZ6bC8dF0gH2jK5x", "VA521"),
    "private_key": ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAAB\n"
                    "-----END OPENSSH PRIVATE KEY-----", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAAB",
                    "VA522"),
    "jwt": ("Bearer " + JWT, JWT, "VA523"),
    "prose_password": ("The router password is Mango#7741 for now.", "Mango#7741", "VA524"),
    "config_password": ('DB_PASSWORD = "Tr0ub4dor&3x"', "Tr0ub4dor&3x", "VA524"),
    "url_password": ("postgres://app:Vk93mPq2Lx@db.internal:5432/prod", "Vk93mPq2Lx", "VA524"),
    "generic": ("X-Auth-Token: q8Z2vK9mL4pT7wX1cN6bJ3hF5dS0aYgU", "q8Z2vK9mL4pT7wX1cN6bJ3hF5dS0aYgU", "VA525"),
}


@pytest.fixture(scope="module")
def detector() -> SecretsDetector:
    return SecretsDetector()


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_planted_secret_is_found_masked(detector: SecretsDetector, kind: str) -> None:
    sentence, raw, rule_id = PLANTED[kind]
    host = load_jsonl("emails.jsonl")[len(kind)]["text"]
    text = f"{host[:200]}\n{sentence}\n{host[200:]}"
    hits = [h for h in detector.scan_text(text) if h.start >= 200]
    assert [h.rule.id for h in hits] == [rule_id], [(h.rule.id, h.kind) for h in hits]
    assert raw not in json.dumps([h.masked for h in hits])
    assert text[hits[0].start : hits[0].end].find(raw[:12]) >= 0  # the span covers the value


def test_no_secrets_in_clean_real_text(detector: SecretsDetector) -> None:
    for name in ("emails.jsonl", "code.jsonl", "wikipedia_en.jsonl", "pubmed.jsonl", "hotpotqa_retrieved.jsonl"):
        for row in load_jsonl(name):
            assert not detector.scan_text(row["text"]), (name, row["id"])


def test_placeholders_and_code_references_are_not_passwords(detector: SecretsDetector) -> None:
    for text in ('password = os.environ["DB_PASSWORD"]', "password: ********", "Your password is required.",
                 "password = ${DB_PASSWORD}", "secret: <your-secret-here>", "the password is changeme"):
        assert not detector.scan_text(text), text
