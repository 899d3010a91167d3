"""Detection quality of the content detectors on real dev text: tampered vectors, planted injections, planted
secrets and personal data. Prints a markdown report (benchmarks/results/content.md holds the last run).

    .venv/bin/python benchmarks/content_quality.py [--data ../shared/data/dev] [--only tamper,injection,sensitive]
        [--tamper-docs 5000] [--seed 0]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import string
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from content_data import DEFAULT_DATA, TOPICAL, clean_docs, injection_strings, load, plant

from auditor.batching import make_batch
from auditor.context import ScanContext, ScanSettings
from auditor.types import CollectionInfo, Distance, FieldMap
from detectors.injection import InjectionDetector
from detectors.patterns.pii_formats import IBAN_LENGTHS
from detectors.pii import PiiDetector
from detectors.secrets import SecretsDetector
from detectors.tamper import VectorTextMismatchDetector

CACHE = Path(os.environ.get("VECAUDIT_BENCH_CACHE", tempfile.gettempdir())) / "vecaudit-bench"


# -- tampering --------------------------------------------------------------------------------------------
def _perturb(v: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(v.shape).astype(np.float32)
    noise -= (noise @ v) * v
    noise /= np.linalg.norm(noise)
    return (cosine * v + np.sqrt(1 - cosine**2) * noise).astype(np.float32)


def _store_vectors(texts: list[str], tag: str) -> np.ndarray:
    """The 'stored' embeddings (fp32, batch 64), cached: a different batch layout than the detector's."""
    from auditor.embedder import Embedder

    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"store-{tag}-{len(texts)}.npy"
    if path.exists():
        return np.load(path)
    vecs = Embedder(batch_size=64, precision="fp32").encode(texts, show_progress=True, desc="store")
    np.save(path, vecs)
    return vecs


def _run_tamper(texts: list[str], vectors: np.ndarray, seed: int, batch_size: int = 32) -> tuple[list[Any], Any]:
    info = CollectionInfo(name="bench", dim=vectors.shape[1], distance=Distance.COSINE, count=len(texts))
    fm = FieldMap(text="text")
    ctx = ScanContext(info=info, field_map=fm, collection_key="bench",
                      settings=ScanSettings(embed_sample="all", seed=seed, embed_batch_size=batch_size))
    try:
        for start in range(0, len(texts), 512):
            ids = list(range(start, min(start + 512, len(texts))))
            ctx.table.append(make_batch(ids, vectors[ids], [{"text": texts[i]} for i in ids], fm))
        ctx.table.seal()
        det = VectorTextMismatchDetector()
        det.begin(ctx)
        t0 = time.perf_counter()
        findings = list(det.finish(ctx))
        elapsed = time.perf_counter() - t0
        return findings, {"seconds": elapsed, "notes": list(ctx.notes), "embedder": ctx.embedder()}
    finally:
        ctx.close()


def bench_tamper(data: Path, n_docs: int, seed: int) -> list[str]:
    rows = load(data / "corpora" / "wikipedia_vital_en_even.jsonl")[:n_docs]
    texts = [r["text"] for r in rows]
    clean = _store_vectors(texts, "wiki")
    questions = [r["question"] for r in load(data / "poison" / "poisonedrag_hotpotqa.jsonl")][::5]
    q_vecs = _store_vectors(questions, "questions")
    rng = np.random.default_rng(seed)
    per_kind = max(10, n_docs // 100)
    chosen = rng.choice(len(texts), size=3 * per_kind, replace=False)
    swap, replace, perturb = chosen[:per_kind], chosen[per_kind : 2 * per_kind], chosen[2 * per_kind :]
    vecs = clean.copy()
    vecs[swap] = clean[np.roll(swap, 1)]
    vecs[replace] = q_vecs[rng.integers(0, len(q_vecs), size=per_kind)]
    for i in perturb:
        vecs[i] = _perturb(clean[i], 0.9, rng)
    findings, meta = _run_tamper(texts, vecs, seed)
    flagged = {f.point_id for f in findings if f.rule_id == "VA501"}
    planted = set(chosen.tolist())
    fp = len(flagged - planted)
    lines = [
        f"### Tampered vectors ({len(texts):,} Wikipedia documents, all-MiniLM-L6-v2, "
        f"{meta['embedder'].active_precision} on {meta['embedder'].device})", "",
        "| planted | count | recall |", "|---|---:|---:|",
    ]
    for name, idx in (("swapped vectors", swap), ("replaced by a question's embedding", replace),
                      ("noise-perturbed, cosine 0.9 to original", perturb)):
        hit = sum(int(i) in flagged for i in idx)
        lines.append(f"| {name} | {len(idx)} | {hit / len(idx):.3f} |")
    n_clean = len(texts) - len(planted)
    lines += ["", f"False positives: {fp} of {n_clean:,} clean points (FPR {fp / n_clean:.4%}); "
              f"re-embedding took {meta['seconds']:.0f} s ({len(texts) / meta['seconds']:.0f} texts/s, "
              "includes model load). Notes: " + "; ".join(meta["notes"])]

    # Model mismatch: a rotated space stands in for another model of the same dimension.
    rotation, _ = np.linalg.qr(rng.standard_normal((clean.shape[1], clean.shape[1])))
    foreign = (clean[:1000] @ rotation).astype(np.float32)
    findings, _ = _run_tamper(texts[:1000], foreign, seed)
    kinds = Counter(f.rule_id for f in findings)
    lines += ["", f"Foreign model (1,000 points, rotated space): findings {dict(kinds)} "
              "(expected exactly one VA502 and no VA501)."]
    return lines


# -- injection --------------------------------------------------------------------------------------------
def bench_injection(data: Path, seed: int) -> list[str]:
    docs = [d for d in clean_docs(data) if d["split"] == "test"]
    attacks = injection_strings(data)
    rng = random.Random(seed)
    # Host genre first, then a document of it: the test split has far more Wikipedia than emails or code.
    hosts = {g: [d for d in docs if d["corpus"] == g] for g in ("email", "code", "wiki")}
    positions = ("start", "middle", "end")
    planted = []
    for i, a in enumerate(attacks):
        host = rng.choice(hosts[("email", "code", "wiki")[i % 3]])
        planted.append({**a, "where": positions[i % 3], "host": host["corpus"],
                        "text": plant(host["text"], a["text"], positions[i % 3])})
    lines = [f"### Injection ({len(planted)} dev injection strings planted in test-split emails, code answers and "
             f"Wikipedia paragraphs, a third each; {len(docs):,} clean test-split documents)", ""]
    lines += ["| detector | recall | FPR (all clean) | FPR averaged over corpora | FPR (clean about prompts/"
              "passwords/instructions) |", "|---|---:|---:|---:|---:|"]
    by_rule: Counter[str] = Counter()
    per_group: dict[str, list[bool]] = defaultdict(list)
    speed: dict[str, float] = {}
    for label, learned in (("rules only (floor)", False), ("rules + learned scorer (default)", True)):
        det = InjectionDetector(learned=learned)
        t0 = time.perf_counter()
        clean_verdicts = det.analyse_many([d["text"] for d in docs])
        clean_hits = [bool(v) for v in clean_verdicts]
        speed[label] = len(docs) / (time.perf_counter() - t0)
        verdicts = det.analyse_many([p["text"] for p in planted])
        hits = [bool(v) for v in verdicts]
        topical = [h for h, d in zip(clean_hits, docs, strict=True) if TOPICAL.search(d["text"])]
        corpora = sorted({d["corpus"] for d in docs})
        macro = np.mean([np.mean([h for h, d in zip(clean_hits, docs, strict=True) if d["corpus"] == c])
                         for c in corpora])
        lines.append(f"| {label} | {np.mean(hits):.3f} | {np.mean(clean_hits):.4f} | {macro:.4f} | "
                     f"{np.mean(topical):.4f} (n={len(topical)}) |")
        if learned:
            for v, p, h in zip(verdicts, planted, hits, strict=True):
                by_rule.update(r[0].id for r in v)
                per_group[f"source {p['family'].split(':')[0]}"].append(h)
                per_group[f"position {p['where']}"].append(h)
                per_group[f"host {p['host']}"].append(h)
            fp_examples = [(d, v) for d, v in zip(docs, clean_verdicts, strict=True) if v]
    lines += ["", "Recall of the default detector by group: " + ", ".join(
        f"{k} {np.mean(v):.3f} (n={len(v)})" for k, v in sorted(per_group.items()))]
    lines += ["", f"Rules firing on planted documents: {dict(sorted(by_rule.items()))}. "
              "Throughput (clean test split, one process): "
              + ", ".join(f"{k} {v:.0f} docs/s" for k, v in speed.items()) + "."]
    fp_corpora = Counter(d["corpus"] for d, _ in fp_examples)
    sizes = Counter(d["corpus"] for d in docs)
    lines += ["", "| clean test-split corpus | flagged / documents | FPR |", "|---|---:|---:|"]
    lines += [f"| {c} | {fp_corpora[c]} / {n} | {fp_corpora[c] / n:.4f} |" for c, n in sorted(sizes.items())]
    lines += ["", "Clean documents flagged (id: rule and span):", ""]
    lines += [f"- {d['corpus']} {d['id']}: " + "; ".join(f"{r.id} {e.get('span', '')[:80]!r}" for r, _, _, e in v)
              for d, v in fp_examples] or ["- none"]
    return lines


# -- secrets and PII --------------------------------------------------------------------------------------
def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + _rand(rng, string.digits, length - len(prefix) - 1)
    for check in string.digits:
        digits = body + check
        total = sum((d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 else d
                    for i, d in enumerate(int(c) for c in reversed(digits)))
        if total % 10 == 0:
            return digits
    raise AssertionError("unreachable")


def _iban(country: str, rng: random.Random) -> str:
    bban = _rand(rng, string.digits, IBAN_LENGTHS[country] - 4)
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


def _jwt(rng: random.Random) -> str:
    def enc(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{enc({'alg': 'HS256', 'typ': 'JWT'})}.{enc({'sub': _rand(rng, string.digits, 8)})}." \
           f"{_rand(rng, string.ascii_letters + string.digits + '-_', 43)}"


def _dni(rng: random.Random) -> str:
    n = rng.randrange(10_000_000, 99_999_999)
    return f"{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}"


def _planted_values(rng: random.Random) -> list[tuple[str, str, str]]:
    """(detector, kind, sentence) with a freshly generated value of every listed kind."""
    an = string.ascii_letters + string.digits
    b62 = string.ascii_letters + string.digits
    first = rng.choice(["maria", "john", "wei", "fatima", "oliver", "anna"])
    visa = _luhn_complete("4", 16, rng)
    # Assigned area codes: libphonenumber rightly rejects numbers in unassigned ones.
    area = rng.choice([212, 312, 415, 617, 206, 303, 512, 702, 404, 305])
    return [
        ("secrets", "aws", f"The deploy script uses AKIA{_rand(rng, string.ascii_uppercase + string.digits, 16)} "
                           "for the upload bucket."),
        ("secrets", "github", f"CI token: ghp_{_rand(rng, an, 36)}"),
        ("secrets", "gitlab", f"export GITLAB_TOKEN=glpat-{_rand(rng, an, 20)}"),
        ("secrets", "slack", f"Bot token xoxb-{_rand(rng, string.digits, 12)}-{_rand(rng, string.digits, 13)}-"
                             f"{_rand(rng, string.ascii_lowercase + string.digits, 24)} posts alerts."),
        ("secrets", "stripe", f"stripe.api_key = 'sk_live_{_rand(rng, b62, 24)}'"),
        ("secrets", "openai", f"OPENAI_API_KEY=sk-proj-{_rand(rng, an + '-_', 56)}"),
        ("secrets", "anthropic", f"the key sk-ant-api03-{_rand(rng, an + '-_', 93)}AA works"),
        ("secrets", "google", f"maps key AIza{_rand(rng, an + '-_', 35)} in the page"),
        ("secrets", "huggingface", f"login with hf_{_rand(rng, b62, 34)}"),
        ("secrets", "sendgrid", f"SG.{_rand(rng, an + '-_', 22)}.{_rand(rng, an + '-_', 43)}"),
        ("secrets", "private_key", "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(
            _rand(rng, an + "+/", 64) for _ in range(4)) + "\n-----END RSA PRIVATE KEY-----"),
        ("secrets", "jwt", f"Authorization header was {_jwt(rng)} yesterday."),
        ("secrets", "password", f"The wifi password is {_rand(rng, an, 6)}{rng.choice('!#%&')}{rng.randint(10, 99)}."),
        ("secrets", "password_config", f'db_password = "{_rand(rng, an, 10)}{rng.randint(10, 99)}"'),
        ("secrets", "basic_auth", f"postgres://app:{_rand(rng, an, 12)}@db.internal:5432/prod"),
        ("secrets", "generic", f"X-Auth-Token: {_rand(rng, an, 32)}"),
        ("pii", "email", f"Write to {first}.{_rand(rng, string.ascii_lowercase, 6)}@"
                         f"{rng.choice(['gmail.com', 'acme.io', 'uni-koeln.de'])}."),
        ("pii", "phone_us", f"Call me at ({area}) {rng.randint(201, 549)}-{rng.randint(1000, 9999)}."),
        ("pii", "phone_intl", f"Office: +44 20 7{rng.randint(100, 999)} {rng.randint(1000, 9999)}"),
        ("pii", "card_visa", f"card {' '.join(visa[i:i + 4] for i in range(0, 16, 4))}"),
        ("pii", "card_mastercard", f"paid with {_luhn_complete(str(rng.randint(51, 55)), 16, rng)}"),
        ("pii", "card_amex", f"Amex {_luhn_complete(rng.choice(['34', '37']), 15, rng)}"),
        ("pii", "iban", f"Transfer to {_iban(rng.choice(['DE', 'GB', 'FR', 'ES', 'NL']), rng)} by Friday."),
        ("pii", "us_ssn", f"SSN {rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"),
        ("pii", "uk_nino", f"NI number {rng.choice('ABCEHJKLMPRSTWXY')}{rng.choice('ABCEHJKLMPRSTWXY')}"
                           f"{rng.randint(100000, 999999)}{rng.choice('ABCD')}"),
        ("pii", "es_dni", f"DNI {_dni(rng)}"),
    ]


def bench_sensitive(data: Path, seed: int, rounds: int = 20) -> list[str]:
    docs = clean_docs(data)
    rng = random.Random(seed)
    detectors = {"secrets": SecretsDetector(), "pii": PiiDetector()}
    fired: dict[str, Counter[str]] = {"secrets": Counter(), "pii": Counter()}
    clean_flagged: Counter[tuple[str, str, str]] = Counter()
    t0 = time.perf_counter()
    for d in docs:
        for name, det in detectors.items():
            for h in det.scan_text(d["text"]):
                clean_flagged[(name, h.rule.id, d["corpus"])] += 1
                fired[name][h.rule.id] += 1
    speed = len(docs) / (time.perf_counter() - t0)
    recall: dict[tuple[str, str], list[bool]] = defaultdict(list)
    correct: Counter[str] = Counter()
    total: Counter[str] = Counter()
    hosts = [d for d in docs if d["split"] == "test"]
    for _ in range(rounds):
        for name, kind, sentence in _planted_values(rng):
            host = rng.choice(hosts)["text"]
            text = plant(host, sentence, rng.choice(("start", "middle", "end")))
            offset = text.index(sentence)
            host_hits = {(h.rule.id, h.start) for h in detectors[name].scan_text(host)}
            hits = detectors[name].scan_text(text)
            inside = [h for h in hits if offset <= h.start < offset + len(sentence)]
            recall[(name, kind)].append(bool(inside))
            total[name] += sum(1 for h in hits if offset <= h.start < offset + len(sentence)
                               or (h.rule.id, h.start) not in host_hits)
            correct[name] += len(inside)
    lines = [f"### Secrets and personal data ({rounds} generated values of each kind planted in clean test-split "
             f"documents; {len(docs):,} clean documents for false positives)", "",
             "| detector | kind | recall |", "|---|---|---:|"]
    lines += [f"| {name} | {kind} | {np.mean(v):.2f} |" for (name, kind), v in recall.items()]
    lines += ["", "Precision on planted documents (findings inside the planted sentence / all new findings): " +
              ", ".join(f"{n} {correct[n] / max(total[n], 1):.3f}" for n in detectors)]
    lines += ["", "Findings on the clean corpora (real values or false positives; every one listed): " +
              (", ".join(f"{n} {r} in {c}: {k}" for (n, r, c), k in sorted(clean_flagged.items())) or "none") +
              f". Throughput {speed:.0f} docs/s (secrets + pii)."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--only", default="tamper,injection,sensitive")
    ap.add_argument("--tamper-docs", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    parts = set(args.only.split(","))
    out = [f"## Content detectors — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    if "injection" in parts:
        out += [*bench_injection(args.data, args.seed), ""]
    if "sensitive" in parts:
        out += [*bench_sensitive(args.data, args.seed), ""]
    if "tamper" in parts:
        out += [*bench_tamper(args.data, args.tamper_docs, args.seed), ""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
