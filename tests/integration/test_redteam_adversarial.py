"""Adversarial red-team generators (issue 16) on real text with the real all-MiniLM-L6-v2: each does what it claims,
and `vecaudit redteam` plants them into a copy of a small local Qdrant store."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import load_jsonl
from support import build_qdrant_store, read_collection

from auditor.cli.main import cli
from auditor.redteam.adversarial import (
    GASLITE_INFO,
    GradientRetriever,
    concept_trigger,
    counterfactual,
    foreign_cluster,
    typo_attack,
    whitebox_prefix,
    word_diff,
)


@pytest.fixture(scope="module")
def retriever() -> GradientRetriever:
    return GradientRetriever()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def test_whitebox_prefix_pulls_the_passage_to_its_query(retriever: GradientRetriever, embed: Any) -> None:
    row = next(r for r in load_jsonl("poisonedrag.jsonl") if not r["text"].startswith(r["question"]))
    query, passage = row["question"], row["text"]
    text, found = whitebox_prefix(retriever, query, passage, rng=random.Random(0), length=8, steps=4)
    assert text.endswith(passage) and len(text) > len(passage)
    assert found.score >= found.start  # greedy ascent never accepts a worse sequence
    q, alone, attacked = embed([query, passage, text])
    # measured with the product embedder on the stored text, not the optimiser's own number
    assert cosine(attacked, q) > cosine(alone, q) + 0.02


def test_concept_trigger_raises_mean_similarity_to_many_queries(retriever: GradientRetriever, embed: Any) -> None:
    rows = load_jsonl("wikipedia_en.jsonl")
    wiki = [r for r in rows if r["topic"] == rows[0]["topic"]]
    queries = [re.split(r"(?<=[.!?])\s+", r["text"])[0] for r in wiki[:12]]
    qv = embed(queries)
    for info in ("", GASLITE_INFO):
        text, found = concept_trigger(
            retriever, queries, rng=random.Random(1), info=info, length=12, steps=6, candidates=6, positions=3
        )
        assert found.score > found.start + 0.05
        assert text.startswith(info) and found.ids != found.initial
        start = f"{info} {retriever.decode(found.initial)}".strip()
        after, before = embed([text, start])
        # the stored text, re-embedded by the product embedder, is nearer the queries than the random start
        assert np.mean([cosine(after, v) for v in qv]) > np.mean([cosine(before, v) for v in qv]) + 0.05


def test_typos_are_few_small_and_move_the_embedding_to_the_query(embed: Any) -> None:
    row = load_jsonl("wikipedia_en.jsonl")[3]
    query = "What is " + row["text"].split(" is ")[0] + "?" if " is " in row["text"] else row["text"][:60]
    text, edits, before, after = typo_attack(row["text"], embed([query])[0], embed, rng=random.Random(2))
    assert 1 <= edits <= 8 and text != row["text"]
    changes = word_diff(row["text"], text)
    assert len(changes) == edits
    for op, old, new in changes:
        assert op == "replace" and len(old) == len(new) == 1
        assert levenshtein(old[0], new[0]) <= 2 and old[0][0] == new[0][0]
    assert after > before
    assert cosine(embed([text])[0], embed([query])[0]) > cosine(embed([row["text"]])[0], embed([query])[0])


@pytest.mark.parametrize("kind", ["date", "number", "name", "negation"])
def test_counterfactual_changes_exactly_one_fact(kind: str) -> None:
    rows = load_jsonl("wikipedia_en.jsonl")
    donors = [r["text"] for r in rows[200:230]]
    made = [c for r in rows[:60] if (c := counterfactual(r["text"], random.Random(4), donors, kinds=[kind]))]
    assert len(made) >= 5
    for c in made:
        assert c.kind == kind and c.text != c.original
        changes = word_diff(c.original, c.text)
        assert len(changes) == 1
        op, old, new = changes[0]
        if kind == "negation":
            assert op == "insert" and new == ["not"]
        else:
            assert c.before in " ".join(old) and c.after in " ".join(new) and c.before != c.after
        if kind in ("date", "number"):
            assert re.fullmatch(r"\d+(\.\d+)?", c.after)


SPANISH = frozenset("de la el en los las del que y por con una un es se".split())
ENGLISH = frozenset("the of and in to is was by for with as on that".split())


def _share(text: str, words: frozenset[str]) -> float:
    tokens = re.findall(r"\w+", text.lower())
    return sum(t in words for t in tokens) / max(1, len(tokens))


def test_foreign_cluster_is_one_topic_in_another_language(embed: Any) -> None:
    spanish = [r["text"] for r in load_jsonl("wikipedia_es.jsonl")]
    cluster = foreign_cluster(spanish, embed, 10, random.Random(5))
    assert len(cluster) == 10 and len({t for t, _ in cluster}) == 10
    for text, _ in cluster:
        assert _share(text, SPANISH) > _share(text, ENGLISH)
    vecs = np.stack([v for _, v in cluster])
    others = embed([t for t in spanish if t not in {c for c, _ in cluster}])
    centre = vecs.mean(axis=0)
    # the nearest of the seed: closer to their centre than the remaining Spanish texts are, on average
    assert np.mean([cosine(v, centre) for v in vecs]) > np.mean([cosine(v, centre) for v in others])
    assert [t for t, _ in foreign_cluster(spanish, embed, 10, random.Random(5))] == [t for t, _ in cluster]


def test_cli_redteam_plants_the_adversarial_classes(tmp_path: Path, embed: Any) -> None:
    rows = load_jsonl("wikipedia_en.jsonl")[:80]
    texts = [r["text"] for r in rows]
    source = build_qdrant_store(tmp_path / "src", embed(texts), [{"text": t} for t in texts])
    foreign = tmp_path / "es.jsonl"
    foreign.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in load_jsonl("wikipedia_es.jsonl")))
    base = ["redteam", source, "--collection", "docs", "--text-field", "text", "--per-class", "3", "--seed", "1"]
    classes = "whitebox-poison,gaslite,corpus-poisoning,typo,counterfactual,foreign"
    result = CliRunner().invoke(
        cli,
        [
            *base,
            "--into",
            str(tmp_path / "scratch"),
            "--classes",
            classes,
            "--steps",
            "2",
            "--foreign-texts",
            str(foreign),
            "--foreign-count",
            "6",
            "--format",
            "json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    planted = {c: v["planted"] for c, v in doc["classes"].items()}
    assert planted == {
        "whitebox-poison": 5,
        "gaslite": 1,
        "corpus-poisoning": 1,
        "typo": 3,
        "counterfactual": 3,
        "foreign": 6,
    }
    scratch = read_collection(f"qdrant+local://{(tmp_path / 'scratch' / 'qdrant').resolve()}")
    assert len(scratch) == 80 + 5 + 1 + 1 + 3 + 6
    new_texts = [p["text"] for pid, (_, p) in scratch.items() if pid >= 80]
    assert sum(t.startswith(GASLITE_INFO) for t in new_texts) == 1
    # typo plants replace the documents they edit (the other classes are new points): whether typo-burst caught them
    # or not, the three edited documents are the typo class
    typo_ids = [pid for pid in range(80) if scratch[pid][1]["text"] != texts[pid]]
    assert len(typo_ids) == 3 and doc["classes"]["typo"]["expected_detectors"] == ["naturalness", "typo-burst"]
    assert {m["point_id"] for m in doc["classes"]["typo"]["missed_points"]} <= set(typo_ids)
    for pid in typo_ids:
        assert scratch[pid][1]["text"] != texts[pid]
        assert len(word_diff(texts[pid], scratch[pid][1]["text"])) <= 8

    wrong = CliRunner().invoke(cli, [*base, "--into", str(tmp_path / "s2"), "--classes", "typo,hotflip"])
    assert wrong.exit_code == 2 and "unknown attack class 'hotflip'" in wrong.output
    no_texts = CliRunner().invoke(cli, [*base, "--into", str(tmp_path / "s3"), "--classes", "foreign"])
    assert no_texts.exit_code == 2 and "--foreign-texts" in no_texts.output


def test_attack_recall_scores_each_family_with_parameters_chosen_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/attack_recall.py: a family view holds only that family's plants, and a ``TUNERS`` rule never
    sees the family it is scored on (leave-one-family-out) nor the corpus (leave-one-corpus-out)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import attack_recall

    def doc(corpus: str) -> dict[str, Any]:
        planted = {f: [100 + i] for i, f in enumerate(attack_recall.FAMILIES)}
        findings = [
            {
                "rule_id": "VA333",
                "detector": "hub",
                "point_id": pid,
                "score": 0.9,
                "threshold": 0.5,
                "severity": "high",
                "message": "m",
                "evidence": {},
                "tenant": None,
            }
            for ids in planted.values()
            for pid in ids
        ]
        return {
            "findings": findings,
            "truth": {"planted": planted, "clean": list(range(50)), "corpus": corpus},
            "bench": {"points": 50 + len(planted)},
        }

    docs = {c: doc(c) for c in ("a", "b", "c")}
    view = attack_recall.family_view(docs["a"], {"typo"})
    assert view["truth"]["planted"] == {"typo": [100 + attack_recall.FAMILIES.index("typo")]}
    assert {f["point_id"] for f in view["findings"]} == {100 + attack_recall.FAMILIES.index("typo")}
    seen: list[tuple[set[str], set[str]]] = []

    def tuner(train: list[dict[str, Any]], max_share: float) -> float:
        seen.append(({f for t in train for f in t["truth"]["planted"]}, {t["truth"]["corpus"] for t in train}))
        return 0.95  # above every planted score: the held-out views must show the floor was applied

    monkeypatch.setitem(attack_recall.TUNERS, "VA333", tuner)
    out = attack_recall.held_out(docs, 0.0005)
    assert len(out) == 3 * len(attack_recall.FAMILIES) == len(seen)
    for (corpus, family), (families, corpora) in zip(out, seen, strict=True):
        assert family not in families and len(families) == len(attack_recall.FAMILIES) - 1
        assert corpus not in corpora and len(corpora) == 2
        assert all(f["severity"] != "high" for f in out[(corpus, family)]["findings"])
