"""Token formats that detect-secrets 1.5 does not cover (newer LLM-provider and cloud keys), each a published
fixed prefix plus the vendor's documented body; used beside detect-secrets' own plugins."""

from __future__ import annotations

import re

#: (kind, compiled pattern); the whole match is the secret.
EXTRA_TOKEN_FORMATS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("Google API Key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])")),
    ("Google OAuth Client Secret", re.compile(r"\bGOCSPX-[0-9A-Za-z_\-]{28}(?![0-9A-Za-z_\-])")),
    ("Anthropic API Key", re.compile(r"\bsk-ant-(?:api|admin)\d{2}-[0-9A-Za-z_\-]{80,}")),
    ("OpenAI Project Key", re.compile(r"\bsk-(?:proj|svcacct|admin)-[0-9A-Za-z_\-]{40,}")),
    ("OpenAI Legacy Key", re.compile(r"\bsk-[0-9A-Za-z]{48}(?![0-9A-Za-z])")),
    ("Hugging Face Token", re.compile(r"\bhf_[0-9A-Za-z]{34,40}(?![0-9A-Za-z])")),
    ("GitHub Fine-grained Token", re.compile(r"\bgithub_pat_[0-9A-Za-z_]{60,90}")),
    ("Groq API Key", re.compile(r"\bgsk_[0-9A-Za-z]{48,56}(?![0-9A-Za-z])")),
    ("Stripe Test Key", re.compile(r"\b[rs]k_test_[0-9A-Za-z]{24,99}")),
    ("Slack App Token", re.compile(r"\bxapp-\d-[A-Z0-9]+-\d+-[0-9a-f]{32,}")),
    ("Azure Storage SAS Signature", re.compile(r"[?&]sig=[0-9A-Za-z%+/]{40,}={0,2}")),
    ("DigitalOcean Token", re.compile(r"\bdo[por]_v1_[0-9a-f]{64}\b")),
)

#: Words that make a nearby high-entropy token a probable credential (generic-secret rule).
KEY_CONTEXT = re.compile(
    r"(?i)(?:api[_\- ]?key|access[_\- ]?key|secret|token|bearer|auth(?:orization)?|credential|password|passwd|"
    r"client[_\- ]?id|private[_\- ]?key|signing[_\- ]?key|x-api-key)"
)

#: A password stated in prose or config ("the password is Tr0ub4dor&3", "pwd: s3cr3t!", "Passwort: ...").
PROSE_PASSWORD = re.compile(
    r"(?i)\b(?:password|passwd|passcode|passphrase|pwd|pass|contrase[ñn]a|mot de passe|passwort|kennwort|senha)"
    r"\b(?:\s+(?:is|was|ist|es|est|é|set to|=|:))?\s*[:=]?\s*[\"'`]?(?P<value>[^\s\"'`,;<>]{6,64})"
)
