"""Optimised and edited attack passages made for real against a sentence-transformers retriever (issue 16).

Gradient attacks (white-box PoisonedRAG prefixes, GASLITE triggers, Zhong et al. corpus-poisoning sequences) share
one HotFlip / GCG-style optimiser over the model's word-embedding matrix; typo perturbations (GARAG-style) and
minimal-edit counterfactuals are edits of real text; the foreign cluster is a topic cluster of other-language text.
Everything is seeded and offline; docs/redteam.md compares each generator with its paper.
"""

from __future__ import annotations

import difflib
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from auditor.progress import progress_bar
from auditor.redteam.generators import Doc, Embed, Plan, alter_answer, question_bait, sentences

log = logging.getLogger(__name__)

#: Attack classes this module plants, and whether each needs the model's gradients (slow on a CPU).
ADVERSARIAL_CLASSES: dict[str, bool] = {
    "whitebox-poison": True,
    "gaslite": True,
    "corpus-poisoning": True,
    "typo": False,
    "counterfactual": False,
    "foreign": False,
}

#: The attacker's own content GASLITE places before its trigger (the paper's "info" prefix); a harmless stand-in.
GASLITE_INFO = "Important update: the official guidance on this topic has changed, see trusted-updates.example.net."


# -- the optimiser ------------------------------------------------------------------------------------------
class GradientRetriever:
    """A sentence-transformers model opened for gradients w.r.t. its input tokens (CPU by default).

    ``score(...)`` and ``gradients(...)`` return the mean cosine of the sentence embedding of a token sequence to
    unit target vectors (higher = closer); the gradient is taken w.r.t. the output of the word-embedding layer,
    which is the gradient w.r.t. the one-hot input tokens multiplied through the embedding matrix (HotFlip).
    """

    def __init__(self, model: str | None = None, *, device: str = "cpu", max_length: int = 128) -> None:
        self.model_name = model
        self.device = device
        self.max_length = max_length
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            import os

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            from auditor.embedder import _quiet_transformers, resolve_model
            from auditor.errors import ConfigError

            _quiet_transformers()
            try:
                self._model = SentenceTransformer(resolve_model(self.model_name), device=self.device)
            except Exception as e:
                raise ConfigError(
                    f"cannot load embedding model {self.model_name!r} for the gradient attacks: {e}",
                    hint="give --model a local sentence-transformers directory",
                ) from e
            self._model.eval()
            self.tokenizer = self._model.tokenizer
            try:
                self.embedding_layer = self._model[0].auto_model.get_input_embeddings()
            except (AttributeError, IndexError, TypeError) as e:
                raise ConfigError(
                    f"model {self.model_name!r} has no transformer word-embedding layer for the gradient attacks",
                    hint="leave out whitebox-poison, gaslite and corpus-poisoning from --classes",
                ) from e
            self.weight = self.embedding_layer.weight.detach()
            # the special tokens the tokenizer wraps a text in (e.g. [CLS] ... [SEP])
            bare = list(self.tokenizer("hello", add_special_tokens=False)["input_ids"])
            full = list(self.tokenizer("hello")["input_ids"])
            at = next(i for i in range(len(full)) if full[i : i + len(bare)] == bare)
            self._specials = (full[:at], full[at + len(bare) :])
            self.allowed = self._allowed_tokens()
        return self._model

    def _allowed_tokens(self) -> Any:
        """A bool mask over the vocabulary: tokens that decode to text which tokenises back to themselves (so an
        optimised sequence survives being stored as text), specials and unused slots excluded."""
        import torch

        vocab = len(self.weight)
        ids = list(range(vocab))
        words = self.tokenizer.convert_ids_to_tokens(ids)
        texts = [self.tokenizer.decode([i]).strip() for i in ids]
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        special = set(self.tokenizer.all_special_ids)
        mask = torch.zeros(vocab, dtype=torch.bool)
        for i, (word, text, enc) in enumerate(zip(words, texts, encoded, strict=True)):
            if i in special or not text or word.startswith("[unused") or enc != [i]:
                continue
            if any(ch.isalnum() for ch in text) or len(text) == 1:
                mask[i] = True
        return mask

    def tokens(self, text: str) -> list[int]:
        self._load()
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        self._load()
        return str(self.tokenizer.decode(list(ids))).strip()

    def token_id(self, word: str) -> int:
        """The id of ``word`` when it is one allowed token, else the first allowed token."""
        self._load()
        ids = self.tokens(word)
        if len(ids) == 1 and bool(self.allowed[ids[0]]):
            return ids[0]
        return int(self.allowed.nonzero()[0, 0])

    def sequence(self, parts: Sequence[Sequence[int]]) -> tuple[list[int], int]:
        """Special tokens around the concatenated ``parts``, cut to ``max_length`` from the end; and the offset of
        the first token of ``parts[0]``."""
        self._load()
        head, tail = self._specials
        body = [t for p in parts for t in p][: self.max_length - len(head) - len(tail)]
        return [*head, *body, *tail], len(head)

    def _features(self, batch: Sequence[Sequence[int]]) -> dict[str, Any]:
        import torch

        width = max(len(s) for s in batch)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([[*s, *[pad] * (width - len(s))] for s in batch], device=self.device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in batch], device=self.device)
        features = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.tokenizer.model_input_names:
            features["token_type_ids"] = torch.zeros_like(ids)
        return features

    def _embed(self, batch: Sequence[Sequence[int]]) -> Any:
        import torch

        out = self._model(self._features(batch))["sentence_embedding"]
        return torch.nn.functional.normalize(out, dim=-1)

    def score(self, batch: Sequence[Sequence[int]], target: np.ndarray, *, chunk: int = 32) -> np.ndarray:
        """float64 ``(n,)``: each sequence's embedding dotted with ``target`` (the mean of unit query vectors, so
        the dot is the mean cosine to the queries); higher = closer."""
        import torch

        self._load()
        t = torch.as_tensor(np.asarray(target, np.float32), device=self.device)
        out = []
        with torch.inference_mode():
            for start in range(0, len(batch), chunk):
                out.append((self._embed(batch[start : start + chunk]) @ t).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def score_vectors(self, texts: list[str]) -> np.ndarray:
        """float32 ``(n, d)`` unit embeddings of ``texts`` by this model (the queries an attack aims at)."""
        import torch

        self._load()
        with torch.inference_mode():
            return np.asarray(
                self._embed([self.sequence([self.tokens(t)])[0] for t in texts]).cpu().numpy(), dtype=np.float32
            )

    def gradients(self, seq: Sequence[int], target: np.ndarray) -> tuple[float, np.ndarray]:
        """The score of ``seq`` and float32 ``(len(seq), vocab)`` first-order gains of putting each token at
        each position (gradient at the word-embedding output times the embedding matrix; higher = better)."""
        import torch

        self._load()
        captured: dict[str, Any] = {}

        def hook(_module: Any, _inp: Any, output: Any) -> Any:
            captured["e"] = output
            return output

        handle = self.embedding_layer.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                s = self._embed([seq])[0] @ torch.as_tensor(np.asarray(target, np.float32), device=self.device)
                (grad,) = torch.autograd.grad(s, captured["e"])
        finally:
            handle.remove()
        gains = grad[0] @ self.weight.T
        return float(s.detach()), gains.detach().cpu().numpy()


@dataclass
class Optimised:
    """A trigger found by :func:`hotflip`: its tokens, its text, its starting tokens, and its score before and
    after (mean cosine)."""

    ids: list[int]
    text: str
    initial: list[int]
    start: float
    score: float


def hotflip(
    retriever: GradientRetriever,
    target: np.ndarray,
    trigger: Sequence[int],
    *,
    prefix: Sequence[int] = (),
    suffix: Sequence[int] = (),
    steps: int = 30,
    candidates: int = 16,
    positions: int = 1,
    rng: random.Random,
    progress: Any = None,
) -> Optimised:
    """Greedy coordinate ascent on ``trigger`` (placed between ``prefix`` and ``suffix``) to raise the mean cosine
    to ``target``: each step takes the gradient once, draws ``positions`` trigger positions (1 = HotFlip; more =
    GCG / GASLITE's multi-coordinate step), ranks every allowed token there by its first-order gain, scores the top
    ``candidates`` swaps per position with real forward passes, and keeps the best swap when it beats the current
    sequence. Deterministic for a given ``rng``."""
    retriever._load()
    current = list(trigger)
    seq, base = retriever.sequence([prefix, current, suffix])
    base += len(prefix)
    span = [p for p in range(len(current)) if base + p < len(seq) - 1]
    best, gains = retriever.gradients(seq, target)
    start = best
    allowed = retriever.allowed.numpy()
    for _ in range(steps):
        chosen = rng.sample(span, min(positions, len(span)))
        trials: list[list[int]] = []
        for p in chosen:
            row = np.where(allowed, gains[base + p], -np.inf)
            row[current[p]] = -np.inf
            for tok in np.argsort(-row)[:candidates]:
                trial = current[:]
                trial[p] = int(tok)
                trials.append(trial)
        scores = retriever.score([retriever.sequence([prefix, t, suffix])[0] for t in trials], target)
        top = int(np.argmax(scores))
        if scores[top] > best:
            current = trials[top]
            seq = retriever.sequence([prefix, current, suffix])[0]
            best, gains = retriever.gradients(seq, target)
        if progress is not None:
            progress.update(1)
    return Optimised(current, retriever.decode(current), list(trigger), start, best)


def unit_mean(vectors: np.ndarray) -> np.ndarray:
    """float32 ``(d,)``: the mean of the rows after scaling each to unit length (its dot with a unit vector is the
    mean cosine to the rows)."""
    v = np.asarray(vectors, dtype=np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return v.mean(axis=0).astype(np.float32)


# -- the three gradient attacks -----------------------------------------------------------------------------
def whitebox_prefix(
    retriever: GradientRetriever,
    query: str,
    passage: str,
    *,
    rng: random.Random,
    length: int = 16,
    steps: int = 30,
    candidates: int = 16,
    progress: Any = None,
) -> tuple[str, Optimised]:
    """PoisonedRAG white-box: a prefix S initialised with the target question's tokens and HotFlip-optimised so
    that ``S + " " + passage`` comes closest to ``query``; returns the stored text and the optimisation record."""
    target = unit_mean(retriever.score_vectors([query]))
    q = retriever.tokens(query)[:length]
    filler = retriever.token_id("the")
    init = (q * (length // max(1, len(q)) + 1))[:length] if q else [filler] * length
    found = hotflip(
        retriever,
        target,
        init,
        suffix=retriever.tokens(passage),
        steps=steps,
        candidates=candidates,
        positions=1,
        rng=rng,
        progress=progress,
    )
    return f"{found.text} {passage}", found


def concept_trigger(
    retriever: GradientRetriever,
    queries: Sequence[str],
    *,
    rng: random.Random,
    info: str = "",
    length: int = 24,
    steps: int = 40,
    candidates: int = 8,
    positions: int = 4,
    progress: Any = None,
) -> tuple[str, Optimised]:
    """A trigger that raises the mean cosine to many ``queries`` of one concept: GASLITE when ``info`` (the
    attacker's content) precedes it, a Zhong et al. corpus-poisoning sequence when ``info`` is empty. Starts from
    random allowed tokens (seeded); returns the stored text and the optimisation record."""
    target = unit_mean(retriever.score_vectors(list(queries)))
    pool = retriever.allowed.nonzero()[:, 0].tolist()
    init = [pool[rng.randrange(len(pool))] for _ in range(length)]
    prefix = retriever.tokens(info) if info else []
    found = hotflip(
        retriever,
        target,
        init,
        prefix=prefix,
        steps=steps,
        candidates=candidates,
        positions=positions,
        rng=rng,
        progress=progress,
    )
    return (f"{info} {found.text}" if info else found.text), found


# -- typos (GARAG-style) ------------------------------------------------------------------------------------
_KEYBOARD = {
    ch: near
    for row in ("qwertyuiop", "asdfghjkl", "zxcvbnm")
    for i, ch in enumerate(row)
    for near in [row[max(0, i - 1) : i] + row[i + 1 : i + 2]]
}
_WORDS = re.compile(r"[A-Za-z]+")


def typo_edit(word: str, op: str, rng: random.Random) -> str:
    """One low-level perturbation of a word of >= 4 letters, first and last letter kept: ``swap`` two inner
    neighbours, ``delete`` / ``insert`` (a doubled letter) inside it, or ``keyboard`` (a QWERTY neighbour)."""
    i = rng.randrange(1, len(word) - 2) if len(word) > 3 else 1
    if op == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == "delete":
        return word[:i] + word[i + 1 :]
    if op == "insert":
        return word[: i + 1] + word[i] + word[i + 1 :]
    near = _KEYBOARD.get(word[i].lower(), "") or "e"
    sub = rng.choice(near)
    return word[:i] + (sub.upper() if word[i].isupper() else sub) + word[i + 1 :]


TYPO_OPS = ("swap", "delete", "insert", "keyboard")


def typo_attack(
    text: str,
    query_vector: np.ndarray,
    embed: Embed,
    *,
    rng: random.Random,
    rate: float = 0.05,
    most: int = 8,
    candidates: int = 24,
) -> tuple[str, int, float, float]:
    """GARAG-style typos: up to ``rate`` of the words (at most ``most``; one edit per word, words of >= 4 letters)
    perturbed one at a time, each round keeping the best of ``candidates`` random single edits by cosine to
    ``query_vector`` (real embeddings; stops when no candidate moves closer). Returns the text, the number of
    edits, and the cosine to the query before and after (higher = closer)."""
    q = np.asarray(query_vector, np.float64)
    q /= max(float(np.linalg.norm(q)), 1e-12)

    def cos(texts: list[str]) -> np.ndarray:
        v = np.asarray(embed(texts), np.float64)
        return np.asarray((v @ q) / np.maximum(np.linalg.norm(v, axis=1), 1e-12))

    words = [(m.start(), m.end()) for m in _WORDS.finditer(text)]
    budget = min(most, max(1, round(rate * len(words))))
    current, edited = text, set()
    best = start = float(cos([text])[0])
    for _ in range(budget):
        spans = [(m.start(), m.end()) for m in _WORDS.finditer(current)]
        open_ = [i for i, (a, b) in enumerate(spans) if b - a >= 4 and i not in edited]
        if not open_:
            break
        trials = []
        for _t in range(candidates):
            i = rng.choice(open_)
            a, b = spans[i]
            trials.append((i, current[:a] + typo_edit(current[a:b], rng.choice(TYPO_OPS), rng) + current[b:]))
        scores = cos([t for _, t in trials])
        top = int(np.argmax(scores))
        if scores[top] <= best:
            break
        best = float(scores[top])
        edited.add(trials[top][0])
        current = trials[top][1]
    return current, len(edited), start, best


# -- counterfactuals ------------------------------------------------------------------------------------------
@dataclass
class Counterfactual:
    """A real snippet with one fact changed: ``kind`` is number, date, name or negation; ``before`` / ``after``
    the changed words (``before`` empty for an inserted negation)."""

    text: str
    original: str
    kind: str
    before: str
    after: str


# whole numbers only (not "20th", "3D", "1,000" or a version "1.2.3"): a changed fact, not a changed word
_YEAR = re.compile(r"(?<![\w.,])(1[5-9]\d\d|20[0-4]\d)(?![\w,]|\.\d)")
_NUMBER = re.compile(r"(?<![\w.,])\d+(?:\.\d+)?(?![\w,]|\.\d)")
_NAME = re.compile(r"(?<=[a-z,;] )[A-Z][a-z]{2,}(?: [A-Z][a-z]{2,})*")
_COPULA = re.compile(r"\b(is|was|are|were|has|have|had|can|will|does|did)\b(?! not\b)")


def counterfactual(
    text: str, rng: random.Random, donors: Sequence[str], kinds: Sequence[str] | None = None
) -> Counterfactual | None:
    """One minimal edit of ``text`` (the first applicable of ``kinds``, default a seeded order): a year moved by
    1-9 (``date``), another number changed (``number``), a mid-sentence proper name swapped for one from
    ``donors`` (``name``), or ``not`` inserted after the first copula/auxiliary (``negation``). None when no kind
    applies."""
    order = list(kinds) if kinds is not None else rng.sample(["date", "number", "name", "negation"], 4)
    for kind in order:
        if kind == "date" and (m := _pick(_YEAR, text, rng)):
            after = str(int(m.group()) + rng.choice([-1, 1]) * rng.randint(1, 9))
        elif kind == "number" and (m := _pick(_NUMBER, text, rng, exclude=_YEAR)):
            value = m.group()
            after = _other_number(value, rng)
        elif kind == "name" and (m := _pick(_NAME, text, rng)):
            names = sorted({n for d in donors for n in _NAME.findall(d)} - set(_NAME.findall(text)))
            if not names:
                continue
            after = rng.choice(names)
        elif kind == "negation" and (m := _COPULA.search(text)):
            return Counterfactual(text[: m.end()] + " not" + text[m.end() :], text, kind, "", "not")
        else:
            continue
        return Counterfactual(text[: m.start()] + after + text[m.end() :], text, kind, m.group(), after)
    return None


def _pick(
    pattern: re.Pattern[str], text: str, rng: random.Random, exclude: re.Pattern[str] | None = None
) -> re.Match[str] | None:
    found = [m for m in pattern.finditer(text) if not (exclude and exclude.fullmatch(m.group()))]
    return rng.choice(found) if found else None


def _other_number(value: str, rng: random.Random) -> str:
    if "." in value:
        whole, frac = value.split(".")
        return f"{int(whole) + rng.randint(1, 9)}.{frac}"
    n = int(value)
    changed = n * rng.choice([2, 3]) if n >= 10 else n + rng.randint(1, 9)
    return str(changed)


def word_diff(a: str, b: str) -> list[tuple[str, list[str], list[str]]]:
    """The word-level differences between two texts: ``(op, words of a, words of b)`` per changed run."""
    wa, wb = a.split(), b.split()
    ops = difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes()
    return [(op, wa[i1:i2], wb[j1:j2]) for op, i1, i2, j1, j2 in ops if op != "equal"]


# -- foreign cluster ------------------------------------------------------------------------------------------
def foreign_cluster(
    texts: Sequence[str], embed: Embed, count: int, rng: random.Random, pool: int = 600
) -> list[tuple[str, np.ndarray]]:
    """``count`` texts of one topic from ``texts`` (other-language documents): a seeded sample of ``pool``, a
    random seed text and its ``count - 1`` nearest by embedding; with their vectors."""
    chosen = rng.sample(list(texts), min(pool, len(texts)))
    if not chosen:
        return []
    vecs = np.asarray(embed(chosen), np.float32)
    unit = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    seed = rng.randrange(len(chosen))
    order = np.argsort(-(unit @ unit[seed]), kind="stable")[:count]
    return [(chosen[int(i)], vecs[int(i)]) for i in order]


# -- plans (what `vecaudit redteam` plants) -------------------------------------------------------------------
@dataclass
class AdversarialOptions:
    """Knobs of the adversarial classes: which to plant, how many optimisation steps, the foreign texts."""

    classes: frozenset[str]
    steps: int | None = None
    foreign_texts: Sequence[str] = ()
    foreign_count: int = 50
    model: str | None = None
    show_progress: bool = True


def topic_queries(docs: Sequence[Doc], rng: random.Random, size: int = 30) -> tuple[Doc, list[str]]:
    """A seed document and one sampled sentence from each of its ``size`` nearest documents (itself included):
    the pseudo-queries of one concept a GASLITE / corpus-poisoning passage aims at."""
    unit = np.stack([d.vector for d in docs]).astype(np.float64)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    seed = rng.randrange(len(docs))
    near = np.argsort(-(unit @ unit[seed]), kind="stable")[: min(size, len(docs))]
    queries = []
    for i in near:
        parts = [s for s in sentences(docs[int(i)].text) if len(s.split()) >= 4] or [docs[int(i)].text[:300]]
        queries.append(rng.choice(parts)[:300])
    return docs[seed], queries


def adversarial_plan(
    plan: Plan,
    docs: Sequence[Doc],
    victims: list[Doc],
    embed: Embed,
    rng: random.Random,
    per_class: int,
    options: AdversarialOptions,
    *,
    text_field: str = "text",
    tenant_field: str | None = None,
) -> None:
    """Plant the requested adversarial classes: new points for the optimised passages, counterfactual twins and
    the foreign cluster; in-place edits (text and vector) of ``victims`` for typos. Gradient classes are slow on a
    CPU (about 1-2 s per step): they plant ``max(1, per_class // 10)`` passages each (white-box: that many target
    questions x 5 passages), with ``options.steps`` steps (default 10 white-box, 30 GASLITE / corpus poisoning)."""
    want = options.classes
    gradient = max(1, per_class // 10)

    def add(cls: str, text: str, vec: np.ndarray, tenant: str | None) -> None:
        payload: dict[str, Any] = {text_field: text}
        if tenant_field and tenant is not None:
            payload[tenant_field] = tenant
        plan.new_points.append((text, vec, payload))
        plan.new_classes.append(cls)

    retriever = GradientRetriever(options.model) if want & {c for c, g in ADVERSARIAL_CLASSES.items() if g} else None
    long_docs = [d for d in docs if len(d.text) >= 80] or list(docs)
    if retriever is not None and "whitebox-poison" in want:
        steps = options.steps if options.steps is not None else 10
        bar = progress_bar(
            total=gradient * 5 * steps, desc="white-box prefixes", unit="step", enabled=options.show_progress
        )
        try:
            for doc in rng.sample(long_docs, min(gradient, len(long_docs))):
                query = question_bait(doc.text)
                donors = [d.text for d in rng.sample(list(docs), min(5, len(docs)))]
                parts = sentences(alter_answer(doc.text, rng, donors)) or [doc.text]
                for v in range(5):
                    passage = " ".join(parts[v % len(parts) :] + parts[: v % len(parts)])
                    text, _ = whitebox_prefix(retriever, query, passage, rng=rng, steps=steps, progress=bar)
                    add("whitebox-poison", text, embed([text])[0], doc.tenant)
        finally:
            bar.close()
    for cls, info in (("gaslite", GASLITE_INFO), ("corpus-poisoning", "")):
        if retriever is None or cls not in want:
            continue
        steps = options.steps if options.steps is not None else 30
        bar = progress_bar(total=gradient * steps, desc=cls, unit="step", enabled=options.show_progress)
        try:
            for _ in range(gradient):
                seed, queries = topic_queries(docs, rng)
                text, _ = concept_trigger(retriever, queries, rng=rng, info=info, steps=steps, progress=bar)
                add(cls, text, embed([text])[0], seed.tenant)
        finally:
            bar.close()
    if "typo" in want:
        for doc in [victims.pop() for _ in range(min(per_class, len(victims)))]:
            query = question_bait(doc.text)
            text, edits, before, after = typo_attack(doc.text, embed([query])[0], embed, rng=rng)
            plan.payload_updates[doc.point_id] = {**plan.payload_updates.get(doc.point_id, {}), text_field: text}
            plan.vector_updates[doc.point_id] = embed([text])[0]
            plan.mark("typo", doc.point_id, f"{edits} typos, cosine to {query!r} {before:.3f} -> {after:.3f}")
    if "counterfactual" in want:
        made = 0
        for doc in rng.sample(long_docs, len(long_docs)):
            if made >= per_class:
                break
            donors = [d.text for d in rng.sample(list(docs), min(8, len(docs)))]
            twin = counterfactual(doc.text, rng, donors)
            if twin is not None:
                add("counterfactual", twin.text, embed([twin.text])[0], doc.tenant)
                made += 1
    if "foreign" in want and options.foreign_texts:
        tenant = rng.choice([d.tenant for d in docs]) if docs else None
        for text, vec in foreign_cluster(options.foreign_texts, embed, options.foreign_count, rng):
            add("foreign", text, vec, tenant)
