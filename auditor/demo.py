"""The demo: a multi-tenant local Qdrant store of real text (shipped corpus, see demo_data/README.md),
a baseline scan, then planted attacks of every class, and the scan that finds them."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from auditor.redteam.generators import Doc, Plan, hub_plan
from auditor.scratch import recreate_owned_dir

COLLECTION = "docs"
MARKER = ".vecaudit-demo"


def demo_rows(name: str) -> list[dict[str, Any]]:
    """Rows of a shipped demo data file (``corpus.jsonl``, ``poisonedrag.jsonl``, ...)."""
    text = resources.files("auditor").joinpath("demo_data", name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass
class Planted:
    """One planted attack: the point it touched, its class, and what was done."""

    point_id: int
    attack: str
    description: str


@dataclass
class DemoStore:
    """The demo store on disk and what is known about its points."""

    path: Path
    rows: list[dict[str, Any]]
    vectors: np.ndarray
    planted: list[Planted] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"qdrant+local://{self.path.resolve() / 'qdrant'}"

    @property
    def ledger_url(self) -> str:
        return f"sqlite:///{(self.path / 'ledger.db').resolve()}"


def prepare_dir(path: Path) -> None:
    """Empty ``path`` for the demo; refuse to delete a folder vecaudit did not create."""
    recreate_owned_dir(path, marker=MARKER, command="demo", option="--dir")


def build_store(path: Path, embed: Callable[[list[str]], np.ndarray]) -> DemoStore:
    """Write the clean demo collection: three tenants from three corpora plus hotpotqa passages."""
    from qdrant_client import QdrantClient, models

    rows = demo_rows("corpus.jsonl")
    for r in demo_rows("hotpotqa_clean.jsonl"):
        rows.append({"id": r["id"], "tenant": "acme", "source": "hotpotqa", "title": None, "text": r["text"]})
    vectors = embed([r["text"] for r in rows])
    client = QdrantClient(path=str(path / "qdrant"))
    try:
        client.create_collection(
            COLLECTION, vectors_config=models.VectorParams(size=vectors.shape[1], distance=models.Distance.DOT)
        )
        client.upsert(
            COLLECTION,
            [
                models.PointStruct(
                    id=i,
                    vector=v.tolist(),
                    payload={
                        "text": r["text"],
                        "tenant": r["tenant"],
                        "doc_id": r["id"],
                        "source": r["source"],
                    },
                )
                for i, (r, v) in enumerate(zip(rows, vectors, strict=True))
            ],
        )
    finally:
        client.close()
    return DemoStore(path=path, rows=rows, vectors=vectors)


def plant_attacks(store: DemoStore, embed: Callable[[list[str]], np.ndarray], seed: int = 7) -> list[Planted]:
    """Edit the store as an attacker (or a broken pipeline) would; returns what was planted."""
    from qdrant_client import QdrantClient, models

    rng = random.Random(seed)
    rows, vectors = store.rows, store.vectors
    by_tenant: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r["source"] != "hotpotqa":
            by_tenant.setdefault(r["tenant"], []).append(i)
    acme, globex, initech = (list(by_tenant[t]) for t in ("acme", "globex", "initech"))
    for group in (acme, globex, initech):
        rng.shuffle(group)
    next_id = len(rows)
    planted: list[Planted] = []
    upserts: list[Any] = []
    vector_updates: list[Any] = []
    payload_sets: list[tuple[int, dict[str, Any]]] = []

    def add_point(
        text: str, tenant: str, attack: str, description: str, vector: np.ndarray | None = None, **extra: Any
    ) -> None:
        nonlocal next_id
        vec = embed([text])[0] if vector is None else vector
        upserts.append(
            models.PointStruct(id=next_id, vector=vec.tolist(), payload={"text": text, "tenant": tenant, **extra})
        )
        planted.append(Planted(next_id, attack, description))
        next_id += 1

    # tampering: a vector replaced by an unrelated question's embedding (retrieval targeting); text kept
    victim = acme.pop()
    query = "What is the refund policy for enterprise customers?"
    vector_updates.append(models.PointVectors(id=victim, vector=embed([query])[0].tolist()))
    planted.append(Planted(victim, "tamper-query", f"vector replaced by the embedding of {query!r}"))
    # integrity faults
    zero = globex.pop()
    vector_updates.append(models.PointVectors(id=zero, vector=[0.0] * vectors.shape[1]))
    planted.append(Planted(zero, "zero-vector", "vector zeroed"))
    scaled = globex.pop()
    vector_updates.append(models.PointVectors(id=scaled, vector=(vectors[scaled] * 6.0).tolist()))
    planted.append(Planted(scaled, "wrong-norm", "vector from another model's scale (norm x6)"))
    source = initech.pop()
    add_point(
        "Quarterly planning notes: move the offsite to March.",
        "initech",
        "copied-vector",
        f"new text stored with point {source}'s exact vector",
        vector=vectors[source],
    )
    unlabeled = acme.pop()
    payload_sets.append(
        (
            unlabeled,
            {"text": rows[unlabeled]["text"], "doc_id": rows[unlabeled]["id"], "source": rows[unlabeled]["source"]},
        )
    )
    planted.append(Planted(unlabeled, "unlabeled", "tenant field removed"))
    # poisoning: PoisonedRAG passages (question + "." + passage, as the attack stores them)
    for p in demo_rows("poisonedrag.jsonl"):
        add_point(
            f"{p['question']}.{p['text']}",
            "acme",
            "poison",
            f"PoisonedRAG passage for {p['question']!r} (answers {p['incorrect_answer']!r})",
        )
    # indirect prompt injection inside a real e-mail
    inj = demo_rows("injections.jsonl")
    target = initech.pop()
    text = rows[target]["text"]
    cut = len(text) // 2
    injected = f"{text[:cut]}\n{inj[0]['text']}\n{text[cut:]}"
    payload_sets.append((target, {"text": injected}))
    vector_updates.append(models.PointVectors(id=target, vector=embed([injected])[0].tolist()))
    planted.append(Planted(target, "injection", f"BIPIA instruction inserted: {inj[0]['text'][:60]!r}"))
    # retrieval hubs: a topic's frequent terms, greedily re-worded to enter its k-NN lists (redteam/generators.py)
    hub_docs = [Doc(i, i, r["text"], r["tenant"], vectors[i]) for i, r in enumerate(rows)]
    hubs = Plan()
    hub_plan(hubs, hub_docs, embed, rng, 2, tenant_field="tenant", text_field="text")
    for text, vec, payload in hubs.new_points:
        why = "term soup optimised to enter many k-NN lists of one topic"
        add_point(text, payload.get("tenant", "acme"), "hub", why, vector=vec)
    # secrets and personal data in a chunk (synthetic, generated now; never real credentials)
    key_id = "AKIA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
    secret = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+") for _ in range(40))
    leak = (
        f"Deploy notes: use aws_access_key_id = {key_id} and aws_secret_access_key = {secret} for the "
        "backup bucket. Contact jane.doe@initech.example or +1 415 555 0132 if it fails."
    )
    add_point(leak, "initech", "secret", "AWS key pair, e-mail address and phone number in a chunk")
    # cross-tenant leakage: an acme document copied into globex, a globex abstract misfiled under initech
    copied = acme.pop()
    add_point(
        rows[copied]["text"],
        "globex",
        "cross-tenant-copy",
        f"copy of acme point {copied} under globex",
        vector=vectors[copied],
        doc_id=rows[copied]["id"],
    )
    misfiled = globex.pop()
    payload_sets.append((misfiled, {"tenant": "initech"}))
    planted.append(Planted(misfiled, "misfiled", "globex abstract relabelled as initech"))

    client = QdrantClient(path=str(store.path / "qdrant"))
    try:
        client.upsert(COLLECTION, upserts)
        client.update_vectors(COLLECTION, vector_updates)
        for pid, payload in payload_sets:
            if "tenant" not in payload and "text" in payload and "doc_id" in payload:
                client.overwrite_payload(COLLECTION, payload=payload, points=[pid])
            else:
                client.set_payload(COLLECTION, payload=payload, points=[pid])
    finally:
        client.close()
    store.planted = planted
    return planted
