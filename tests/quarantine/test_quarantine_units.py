"""Quarantine building blocks: bit-exact backups, their encryption and keys, ulp distances, lock staleness,
the retrieval guard."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from auditor.backupcrypt import KEY_ENV, KEY_FILE_ENV, BackupKeys, describe, key_id, new_key, purged
from auditor.cli.main import cli
from auditor.errors import ConfigError, QuarantineError
from auditor.guard import exclude_quarantined
from auditor.quarantine import (
    decode_point,
    describe_differences,
    encode_point,
    lock_is_stale,
    new_lock_token,
    reopenable,
    vector_differences,
    vectors_equal,
)
from auditor.types import StoredPoint

SECRET = "ghp_4x8Tq2LmZr9VbN3cK7sWd1YfHj6Ue5Pa0Go2"


def test_backup_round_trip_is_bit_exact_for_awkward_floats() -> None:
    awkward = np.array([np.nan, -0.0, np.inf, -np.inf, 1e-45, 3.4028235e38, 0.1], dtype=np.float32)
    nan_payload = np.frombuffer(np.uint32(0x7FC12345).tobytes(), dtype=np.float32)  # a NaN with payload bits
    vector = np.concatenate([awkward, nan_payload])
    point = StoredPoint(id="a1b2", vectors={"dense": vector.tolist(), "": [1.5, 2.5]}, payload={"text": "é", "n": 1})
    doc = encode_point(point)
    back = decode_point(json.loads(json.dumps(doc)))  # through JSON, as the ledger stores it
    assert np.asarray(back.vectors["dense"], dtype="<f4").tobytes() == vector.astype("<f4").tobytes()
    assert back.payload == point.payload and back.id == "a1b2"
    assert vectors_equal(back, point)
    changed = StoredPoint(id="a1b2", vectors={"dense": vector.tolist(), "": [1.5, 2.5000002]}, payload={})
    assert not vectors_equal(changed, point)


def test_vector_differences_count_float32_steps() -> None:
    one = np.float32(1.0)
    base = np.array([1.0, -2.0, 0.0, 0.5], dtype=np.float32)
    moved = base.copy()
    moved[0] = np.nextafter(np.nextafter(one, np.float32(2)), np.float32(2))  # two steps up
    moved[1] = np.nextafter(np.float32(-2.0), np.float32(0))  # one step towards zero
    a = StoredPoint(1, {"": base.tolist(), "title": [0.25]}, {})
    b = StoredPoint(1, {"": moved.tolist(), "title": [0.25]}, {})
    assert vector_differences(b, a) == {"": 2}
    assert vector_differences(a, a) == {}
    signed_zero = StoredPoint(1, {"": [-0.0, -2.0, 0.0, 0.5]}, {})
    assert vector_differences(signed_zero, StoredPoint(1, {"": base.tolist()}, {}))[""] is not None
    assert vector_differences(StoredPoint(1, {"": [0.0, -2.0, 0.0, 0.5]}, {}), signed_zero) == {"": 1}
    assert vector_differences(StoredPoint(1, {"": [np.nan]}, {}), StoredPoint(1, {"": [1.0]}, {})) == {"": None}
    assert vector_differences(StoredPoint(1, {}, {}), a) == {"": None, "title": None}
    note = describe_differences(7, {"": 2, "title": None}, "'docs'")
    assert note.startswith("point 7: vector up to 2 ulp off, vector 'title' changed in 'docs'") and "exact" in note


def test_sealed_backup_hides_the_point_and_opens_only_with_its_key() -> None:
    point = StoredPoint(id=9, vectors={"": [0.5, -0.25]}, payload={"text": f"token {SECRET}", "n": [1, {"k": "v"}]})
    plain = encode_point(point)
    keys = BackupKeys.parse(new_key().decode(), source=KEY_ENV)
    sealed = json.loads(json.dumps(keys.seal(plain)))  # as the ledger's JSON column holds it
    text = json.dumps(sealed)
    assert SECRET not in text and "f32le" not in text and "payload\"" not in text.replace("payload_hash", "")
    assert sealed["format"] == 2 and sealed["key_id"] == keys.current_id and sealed["id"] == 9
    assert sealed["payload_hash"] == plain["payload_hash"]
    assert sealed["vectors"] == {"": {"hash": plain["vectors"][""]["hash"]}}
    assert decode_point(keys.open(sealed, action_id=1)) == decode_point(plain)
    assert describe(sealed) == f"encrypted (key {keys.current_id})" and describe(plain) == "plain"

    other = BackupKeys.parse(new_key().decode(), source=KEY_ENV)
    with pytest.raises(ConfigError, match=f"encrypted with key {keys.current_id}") as wrong:
        other.open(sealed, action_id=1)
    assert "\n" not in str(wrong.value) and wrong.value.exit_code == 2
    rotated = BackupKeys.parse(f"{new_key().decode()},{keys.keys[0].decode()}", source=KEY_ENV)
    assert rotated.current_id != keys.current_id
    assert rotated.open(sealed, action_id=1) == plain  # old backups open while the old key follows the new one
    tampered = {**sealed, "fernet": sealed["fernet"][:-8] + "AAAAAAA="}
    with pytest.raises(QuarantineError, match="altered"):
        keys.open(tampered, action_id=1)
    forged = {**sealed, "payload_hash": "0" * 32}
    with pytest.raises(QuarantineError, match="recorded hashes"):
        keys.open(forged, action_id=1)

    gone = purged(sealed, by="alice", at="2026-01-01T00:00:00+00:00")
    assert "fernet" not in gone and gone["payload_hash"] == plain["payload_hash"] and gone["key_id"] == keys.current_id
    assert gone["purged"]["by"] == "alice" and describe(gone) == "purged"


def test_keys_come_from_the_environment_or_a_file(tmp_path: Path) -> None:
    key = new_key().decode()
    assert BackupKeys.from_env({}) is None
    assert BackupKeys.from_env({KEY_ENV: key}).current_id == key_id(key.encode())  # type: ignore[union-attr]
    path = tmp_path / "k"
    path.write_text(key + "\n")
    path.chmod(0o600)
    assert BackupKeys.from_env({KEY_FILE_ENV: str(path)}).keys == (key.encode(),)  # type: ignore[union-attr]
    for env, message in [
        ({KEY_ENV: "hunter2-not-a-key"}, "does not hold a Fernet key.*keygen"),
        ({KEY_ENV: key, KEY_FILE_ENV: str(path)}, "both.*only one"),
        ({KEY_FILE_ENV: str(tmp_path / "missing")}, "does not exist.*keygen"),
        ({KEY_ENV: " , "}, "holds no key.*keygen"),
    ]:
        with pytest.raises(ConfigError, match=message) as err:
            BackupKeys.from_env(env)
        assert "hunter2" not in str(err.value) and err.value.exit_code == 2


def test_keygen_prints_a_key_or_writes_an_owner_only_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    printed = CliRunner().invoke(cli, ["quarantine", "keygen"])
    assert printed.exit_code == 0, printed.output
    key = printed.stdout.strip()
    assert BackupKeys.parse(key, source="stdout").current_id in printed.stderr
    out = tmp_path / "q.key"
    written = CliRunner().invoke(cli, ["quarantine", "keygen", "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and out.read_text().strip() not in (key, "")
    assert BackupKeys.from_env({KEY_FILE_ENV: str(out)}) is not None
    # the export line names the file by its absolute path, so it still works from another directory
    monkeypatch.chdir(tmp_path)
    relative = CliRunner().invoke(cli, ["quarantine", "keygen", "--out", "r.key"], catch_exceptions=False)
    assert relative.exit_code == 0 and f"{KEY_FILE_ENV}={tmp_path.resolve() / 'r.key'}" in relative.stderr
    again = CliRunner().invoke(cli, ["quarantine", "keygen", "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output and len(again.output.strip().splitlines()) == 1


def test_lock_staleness() -> None:
    assert lock_is_stale(None)
    assert not lock_is_stale(new_lock_token())  # this process holds it
    host = socket.gethostname()[:30]
    assert not lock_is_stale(f"abc:{os.getppid()}:0:{host}")  # a live process on this host, however old
    assert lock_is_stale(f"abc:999999999:9999999999:{host}")  # no such process
    assert lock_is_stale("abc:1:0:another-host")  # lease expired
    assert not lock_is_stale(f"abc:1:{2**40}:another-host")
    assert lock_is_stale("garbage")


def test_reopenable_restores_the_local_uri() -> None:
    assert reopenable("qdrant+local:/data/store") == "qdrant+local:///data/store"
    assert reopenable("qdrant+local:///data/store") == "qdrant+local:///data/store"
    assert reopenable("qdrant://db:6333") == "qdrant://db:6333"


def test_guard_keeps_the_callers_filter() -> None:
    from qdrant_client import models

    mine = models.Filter(
        must=models.FieldCondition(key="tenant", match=models.MatchValue(value="acme")),
        must_not=[models.FieldCondition(key="draft", match=models.MatchValue(value=True))],
    )
    guarded = exclude_quarantined(mine, flag_field="q")
    assert isinstance(guarded.must, list) and len(guarded.must) == 2
    assert guarded.must_not == mine.must_not
    assert guarded.must[1].is_empty.key == "q"
    assert exclude_quarantined({"should": [{"key": "a", "match": {"value": 1}}]}).should
    with pytest.raises(TypeError):
        exclude_quarantined("tenant = acme")
