"""Generators of one secret or personal value of every kind the `secrets` and `pii` detectors know, written the way
it appears in real text (a config line, a URL, a sentence), for the masking property tests and the canary checks.

Every value is generated from a ``random.Random``: ``canary(kind)`` is a fixed value per kind (seeded by the kind's
name), and the Hypothesis tests draw new ones. None of them is a real credential or a real person's data.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass

ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits
LOWER_DIGITS = string.ascii_lowercase + string.digits
HEX = "0123456789abcdef"
TOKEN = ALNUM + "_-"


@dataclass(frozen=True)
class Planted:
    """A value as written in text: ``fragment`` holds ``raw``; ``body`` is the part of ``raw`` that is secret
    (without a published vendor prefix) and ``digits_only`` says it is a number checked only as a whole."""

    kind: str
    fragment: str
    raw: str
    body: str
    digits_only: bool = False

    def forms(self) -> list[str]:
        """The raw value as it may be written: as is and without separators (cards, IBANs, phones, ids)."""
        compact = "".join(c for c in self.raw if c not in " -().")
        return sorted({self.raw, compact}, key=len, reverse=True)

    def pieces(self, width: int = 12) -> list[str]:
        """Every ``width``-character run of the secret body (a partly masked value leaks one of them)."""
        if self.digits_only or len(self.body) < width:
            return []
        return sorted({self.body[i : i + width] for i in range(len(self.body) - width + 1)})

    def leaks_in(self, haystack: str) -> list[str]:
        """The forms or body pieces of this value found in ``haystack``."""
        return [s for s in [*self.forms(), *self.pieces()] if s in haystack]


def _pick(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _mixed(rng: random.Random, alphabet: str, n: int) -> str:
    """``n`` characters with at least one letter and one digit (as real keys have)."""
    while True:
        value = _pick(rng, alphabet, n)
        if any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
            return value


def _token(kind: str, prefix: str, alphabet: str, n: int, *, before: str = "", after: str = "") -> Callable[
        [random.Random], Planted]:
    def make(rng: random.Random) -> Planted:
        body = _mixed(rng, alphabet, n)
        raw = prefix + body
        return Planted(kind, f"{before}{raw}{after}", raw, body)

    return make


def _keyed(kind: str, template: str, alphabet: str, n: int) -> Callable[[random.Random], Planted]:
    """A value that the detector only recognises next to its key name (``template`` holds ``{v}``)."""

    def make(rng: random.Random) -> Planted:
        value = _mixed(rng, alphabet, n) if alphabet != HEX else _pick(rng, alphabet, n)
        return Planted(kind, template.format(v=value), value, value)

    return make


def _slack(rng: random.Random) -> Planted:
    # a real bot token: the last part is mixed case (detect-secrets' own regex stops before it)
    raw = f"xoxb-{_pick(rng, string.digits, 12)}-{_pick(rng, string.digits, 13)}-{_mixed(rng, ALNUM, 24)}"
    return Planted("slack_token", f"Bot token: {raw}", raw, raw[5:])


def _slack_app(rng: random.Random) -> Planted:
    body = f"{_pick(rng, UPPER_DIGITS, 10)}-{_pick(rng, string.digits, 13)}-{_mixed(rng, HEX, 64)}"
    return Planted("slack_app", f"SLACK_APP_TOKEN={'xapp-1-' + body}", "xapp-1-" + body, body)


def _dotted(kind: str, prefix: str, lengths: tuple[int, ...]) -> Callable[[random.Random], Planted]:
    """Dot-separated random parts (Discord bot tokens, SendGrid keys)."""

    def make(rng: random.Random) -> Planted:
        body = ".".join(_mixed(rng, ALNUM, n) for n in lengths)
        return Planted(kind, f"token {prefix}{body} in the bot config", prefix + body, body)

    return make


def _slack_webhook(rng: random.Random) -> Planted:
    path = f"T{_pick(rng, UPPER_DIGITS, 10)}/B{_pick(rng, UPPER_DIGITS, 10)}/{_mixed(rng, ALNUM, 24)}"
    raw = f"https://hooks.slack.com/services/{path}"
    return Planted("slack_webhook", f"alerts go to {raw}", raw, path)


def _stripe(rng: random.Random) -> Planted:
    body = _mixed(rng, ALNUM, rng.randint(24, 99))  # today's live keys are far longer than the 24 of the regex
    raw = "sk_live_" + body
    return Planted("stripe_live", f"stripe.api_key = '{raw}'", raw, body)


def _openai_legacy_plugin(rng: random.Random) -> Planted:
    body = f"{_pick(rng, string.ascii_lowercase, 4)}-{_mixed(rng, ALNUM, 20)}T3BlbkFJ{_mixed(rng, ALNUM, 20)}"
    return Planted("openai_token", f"OPENAI_API_KEY={'sk-' + body}", "sk-" + body, body)


def _jwt(rng: random.Random) -> Planted:
    def part(doc: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    header = part({"alg": "HS256", "typ": "JWT"})
    claims = part({"sub": _pick(rng, string.digits, 8), "name": _pick(rng, string.ascii_letters, 10)})
    signature = base64.urlsafe_b64encode(rng.randbytes(32)).decode().rstrip("=")
    raw = f"{header}.{claims}.{signature}"
    return Planted("jwt", f"Authorization: Bearer {raw}", raw, f"{claims}.{signature}")


PEM_KINDS = ("RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY", "OPENSSH PRIVATE KEY", "PRIVATE KEY",
             "PGP PRIVATE KEY BLOCK")


def _private_key(rng: random.Random) -> Planted:
    label = rng.choice(PEM_KINDS)
    lines = [base64.b64encode(rng.randbytes(48)).decode() for _ in range(3)]
    body = "\n".join(lines)
    block = f"-----BEGIN {label}-----\n{body}\n-----END {label}-----"
    return Planted("private_key", block, lines[1], lines[1])


def _putty_key(rng: random.Random) -> Planted:
    line = base64.b64encode(rng.randbytes(48)).decode()
    block = (f"PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\nComment: deploy\nPublic-Lines: 1\n"
             f"{base64.b64encode(rng.randbytes(24)).decode()}\nPrivate-Lines: 1\n{line}\nPrivate-MAC: "
             f"{_pick(rng, HEX, 40)}")
    return Planted("putty_key", block, line, line)


def _password(rng: random.Random) -> str:
    while True:
        value = (_pick(rng, string.ascii_letters, rng.randint(4, 10)) + rng.choice("!#%&*@^~$") +
                 _pick(rng, string.digits, rng.randint(1, 4)) + _pick(rng, string.ascii_letters, 2))
        if len(set(value)) >= 6:
            return value


def _config_password(rng: random.Random) -> Planted:
    value = _password(rng)
    return Planted("config_password", f'DB_PASSWORD = "{value}"', value, value)


def _prose_password(rng: random.Random) -> Planted:
    value = _password(rng)
    return Planted("prose_password", f"The router password is {value} for now.", value, value)


def _basic_auth(rng: random.Random) -> Planted:
    value = _mixed(rng, ALNUM, 14)
    return Planted("url_password", f"postgres://app:{value}@db.internal:5432/prod", value, value)


def _generic(rng: random.Random) -> Planted:
    value = _mixed(rng, ALNUM, 32)
    return Planted("generic_secret", f"X-Auth-Token: {value}", value, value)


def _email(rng: random.Random) -> Planted:
    local = f"{_pick(rng, string.ascii_lowercase, 5)}.{_pick(rng, string.ascii_lowercase + string.digits, 6)}"
    domain = f"{_pick(rng, string.ascii_lowercase, 7)}-{_pick(rng, string.ascii_lowercase, 4)}"
    raw = f"{local}@{domain}.{rng.choice(['se', 'de', 'com', 'org', 'io'])}"
    return Planted("email", f"Questions go to {raw} today.", raw, raw.split("@")[0])


def _phone(region: str) -> Callable[[random.Random], Planted]:
    import phonenumbers

    def make(rng: random.Random) -> Planted:
        while True:
            if region == "US":
                raw = f"({rng.choice(['212', '312', '415', '617', '646', '206'])}) {rng.randint(201, 989)}-" \
                      f"{_pick(rng, string.digits, 4)}"
            else:
                raw = f"+44 20 7{_pick(rng, string.digits, 3)} {_pick(rng, string.digits, 4)}"
            parsed = phonenumbers.parse(raw, region)
            if phonenumbers.is_valid_number(parsed):
                return Planted(f"phone_{region.lower()}", f"Call {raw} after six.", raw, raw, digits_only=True)

    return make


def _luhn_complete(digits: str) -> str:
    for last in string.digits:
        candidate = digits + last
        total = 0
        for i, ch in enumerate(reversed(candidate)):
            d = int(ch)
            if i % 2:
                d = d * 2 - 9 if d > 4 else d * 2
            total += d
        if total % 10 == 0:
            return candidate
    raise AssertionError("unreachable")


#: card network -> (issuer prefixes, length, digit groups as written)
CARD_NETWORKS = {
    "visa": (("4",), 16, (4, 4, 4, 4)),
    "mastercard": (("51", "53", "55", "2221", "2720"), 16, (4, 4, 4, 4)),
    "amex": (("34", "37"), 15, (4, 6, 5)),
    "discover": (("6011", "65"), 16, (4, 4, 4, 4)),
    "jcb": (("3528", "3566", "3589"), 16, (4, 4, 4, 4)),
    "diners": (("36", "38", "300"), 14, (4, 6, 4)),
}


def _card(network: str) -> Callable[[random.Random], Planted]:
    prefixes, length, groups = CARD_NETWORKS[network]

    def make(rng: random.Random) -> Planted:
        prefix = rng.choice(prefixes)
        digits = _luhn_complete(prefix + _pick(rng, string.digits, length - len(prefix) - 1))
        parts, at = [], 0
        for g in groups:
            parts.append(digits[at : at + g])
            at += g
        raw = rng.choice([" ", "-", ""]).join(parts)
        return Planted(f"card_{network}", f"Paid with card {raw}.", raw, digits, digits_only=True)

    return make


#: country -> BBAN shape (letters, then digits) with the ISO 13616 length
IBAN_SHAPES = {"DE": (0, 18), "GB": (4, 14), "ES": (0, 20), "NL": (4, 10), "FR": (0, 23)}


def _iban(rng: random.Random) -> Planted:
    country = rng.choice(sorted(IBAN_SHAPES))
    letters, digits = IBAN_SHAPES[country]
    bban = _pick(rng, string.ascii_uppercase, letters) + _pick(rng, string.digits, digits)
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    compact = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    raw = " ".join(compact[i : i + 4] for i in range(0, len(compact), 4)) if rng.random() < 0.5 else compact
    return Planted("iban", f"Please transfer the deposit to {raw}.", raw, compact, digits_only=True)


def _ssn(rng: random.Random) -> Planted:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    raw = f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
    return Planted("us_ssn", f"Applicant SSN {raw} on file.", raw, raw, digits_only=True)


def _nino(rng: random.Random) -> Planted:
    first, second = "ABCEGHJKLMNOPRSTWXYZ", "ABCEGHJKLMNPRSTWXYZ"
    while True:
        prefix = rng.choice(first) + rng.choice(second)
        if prefix not in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}:
            break
    digits = _pick(rng, string.digits, 6)
    raw = f"{prefix} {digits[:2]} {digits[2:4]} {digits[4:]} {rng.choice('ABCD')}"
    return Planted("uk_nino", f"NI number {raw} on the payslip.", raw, raw, digits_only=True)


def _dni(rng: random.Random) -> Planted:
    letters = "TRWAGMYFPDXBNJZSQVHLCKE"
    if rng.random() < 0.5:
        digits = _pick(rng, string.digits, 8)
        raw = digits + letters[int(digits) % 23]
    else:
        prefix, digits = rng.choice("XYZ"), _pick(rng, string.digits, 7)
        raw = prefix + digits + letters[int(str("XYZ".index(prefix)) + digits) % 23]
    return Planted("es_dni", f"DNI {raw} del titular.", raw, raw, digits_only=True)


#: kind -> (generator, the kind the detector reports it as)
GENERATORS: dict[str, tuple[Callable[[random.Random], Planted], str]] = {
    # detect-secrets plugins
    "artifactory": (_token("artifactory", "AKC", ALNUM, 60, before="artifactory token "), "Artifactory Credentials"),
    "aws_key_id": (_token("aws_key_id", "AKIA", UPPER_DIGITS, 16, before="Upload with "), "AWS Access Key"),
    "aws_secret": (_keyed("aws_secret", "aws_secret_access_key = '{v}'", ALNUM + "/+", 40), "AWS Access Key"),
    "azure_storage": (_keyed("azure_storage", "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={v};"
                             "EndpointSuffix=core.windows.net", ALNUM + "+/", 88),
                      "Azure Storage Account access key"),
    "url_password": (_basic_auth, "Basic Auth Credentials"),
    "cloudant": (_keyed("cloudant", 'cloudant_password = "{v}"', HEX, 64), "Cloudant Credentials"),
    "discord": (_dotted("discord", "M", (24, 6, 27)), "Discord Bot Token"),
    "github": (_token("github", "ghp_", ALNUM, 36, before="CI pushes with "), "GitHub Token"),
    "gitlab": (_token("gitlab", "glpat-", ALNUM, 20, before="GITLAB_TOKEN="), "GitLab Token"),
    "ibm_cloud_iam": (_keyed("ibm_cloud_iam", 'ibm_cloud_iam_key = "{v}"', ALNUM, 44), "IBM Cloud IAM Key"),
    "ibm_cos_hmac": (_keyed("ibm_cos_hmac", 'cos_hmac_secret_access_key = "{v}"', HEX, 48),
                     "IBM COS HMAC Credentials"),
    "jwt": (_jwt, "JSON Web Token"),
    "mailchimp": (_token("mailchimp", "", LOWER_DIGITS, 32, before="mailchimp key ", after="-us14"),
                  "Mailchimp Access Key"),
    "npm": (_token("npm", "npm_", ALNUM, 36, before="//registry.npmjs.org/:_authToken="), "NPM tokens"),
    "openai_token": (_openai_legacy_plugin, "OpenAI Token"),
    "private_key": (_private_key, "Private Key"),
    "putty_key": (_putty_key, "Private Key"),
    "pypi": (_token("pypi", "pypi-AgEIcHlwaS5vcmc", TOKEN, 80, before="twine upload -p "), "PyPI Token"),
    "sendgrid": (_dotted("sendgrid", "SG.", (22, 43)), "SendGrid API Key"),
    "slack_token": (_slack, "Slack Token"),
    "slack_webhook": (_slack_webhook, "Slack Token"),
    "softlayer": (_keyed("softlayer", 'softlayer_api_key = "{v}"', LOWER_DIGITS, 64), "SoftLayer Credentials"),
    "square": (_token("square", "sq0csp-", ALNUM, 43, before="square secret "), "Square OAuth Secret"),
    "stripe_live": (_stripe, "Stripe Access Key"),
    "telegram": (_token("telegram", "", TOKEN, 35, before="bot 123456789:"), "Telegram Bot Token"),
    "twilio": (_token("twilio", "SK", LOWER_DIGITS, 32, before="twilio "), "Twilio API Key"),
    # newer formats (detectors/patterns/secret_formats.py)
    "google_api": (_token("google_api", "AIza", TOKEN, 35, before="maps key "), "Google API Key"),
    "google_oauth": (_token("google_oauth", "GOCSPX-", TOKEN, 28, before="client secret "),
                     "Google OAuth Client Secret"),
    "anthropic": (_token("anthropic", "sk-ant-api03-", TOKEN, 93), "Anthropic API Key"),
    "openai_project": (_token("openai_project", "sk-proj-", TOKEN, 64), "OpenAI Project Key"),
    "openai_legacy": (_token("openai_legacy", "sk-", ALNUM, 48), "OpenAI Legacy Key"),
    "huggingface": (_token("huggingface", "hf_", ALNUM, 37), "Hugging Face Token"),
    "github_fine_grained": (_token("github_fine_grained", "github_pat_", ALNUM + "_", 82),
                            "GitHub Fine-grained Token"),
    "groq": (_token("groq", "gsk_", ALNUM, 52), "Groq API Key"),
    "stripe_test": (_token("stripe_test", "sk_test_", ALNUM, 40), "Stripe Test Key"),
    "slack_app": (_slack_app, "Slack App Token"),
    "azure_sas": (_keyed("azure_sas", "https://acct.blob.core.windows.net/c?sv=2022-11-02&sig={v}", ALNUM + "%+/",
                         44), "Azure Storage SAS Signature"),
    "digitalocean": (_token("digitalocean", "dop_v1_", HEX, 64), "DigitalOcean Token"),
    # passwords and generic secrets (our own rules)
    "config_password": (_config_password, "Secret Keyword"),
    "prose_password": (_prose_password, "Password in prose"),
    "generic_secret": (_generic, "High Entropy String"),
    # personal data (detectors/pii.py)
    "email": (_email, "email"),
    "phone_us": (_phone("US"), "phone"),
    "phone_gb": (_phone("GB"), "phone"),
    **{f"card_{n}": (_card(n), f"card:{n}") for n in CARD_NETWORKS},
    "iban": (_iban, "iban"),
    "us_ssn": (_ssn, "us_ssn"),
    "uk_nino": (_nino, "uk_nino"),
    "es_dni": (_dni, "es_dni"),
}
KINDS = sorted(GENERATORS)


def generate(kind: str, rng: random.Random) -> Planted:
    """A new value of ``kind`` drawn from ``rng``."""
    return GENERATORS[kind][0](rng)


def canary(kind: str) -> Planted:
    """The fixed canary of ``kind`` (the same on every run)."""
    return generate(kind, random.Random(f"vecaudit-canary-{kind}"))
