"""Encryption at rest of quarantine backups: Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) with a key
from ``VECAUDIT_QUARANTINE_KEY`` or the file named by ``VECAUDIT_QUARANTINE_KEY_FILE``; the ledger keeps only the
token, the key's id and the content hashes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.errors import ConfigError, QuarantineError

log = logging.getLogger(__name__)

KEY_ENV = "VECAUDIT_QUARANTINE_KEY"
KEY_FILE_ENV = "VECAUDIT_QUARANTINE_KEY_FILE"
#: Backup formats in ``quarantine_actions.backup``: 1 holds the point in clear, 2 holds it as a Fernet token.
PLAIN, ENCRYPTED = 1, 2
HOW_TO_SET = (
    f"create a key with `vecaudit quarantine keygen --out FILE` and export {KEY_FILE_ENV}=FILE (or {KEY_ENV}=<key>)"
)


def key_id(key: bytes) -> str:
    """A short public name of a key (the first 12 hex digits of its SHA-256): tells keys apart, reveals nothing."""
    return hashlib.sha256(key).hexdigest()[:12]


def new_key() -> bytes:
    """A fresh random Fernet key (url-safe base64 of 32 bytes)."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key()


@dataclass(frozen=True)
class BackupKeys:
    """The keys this run holds: the first encrypts new backups, any of them decrypts (rotation)."""

    keys: tuple[bytes, ...]
    source: str

    @property
    def current_id(self) -> str:
        return key_id(self.keys[0])

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BackupKeys | None:
        """The keys in ``VECAUDIT_QUARANTINE_KEY`` (comma-separated, newest first) or in the file named by
        ``VECAUDIT_QUARANTINE_KEY_FILE``; None when neither is set. A malformed key is a ConfigError."""
        env = os.environ if env is None else env
        inline, path = env.get(KEY_ENV, "").strip(), env.get(KEY_FILE_ENV, "").strip()
        if inline and path:
            raise ConfigError(f"both {KEY_ENV} and {KEY_FILE_ENV} are set", hint="set only one of them")
        if path:
            return cls.parse(_read_key_file(Path(path)), source=f"{KEY_FILE_ENV} ({path})")
        if inline:
            return cls.parse(inline, source=KEY_ENV)
        return None

    @classmethod
    def parse(cls, text: str, *, source: str) -> BackupKeys:
        from cryptography.fernet import Fernet

        parts = [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]
        if not parts:
            raise ConfigError(f"{source} holds no key", hint=HOW_TO_SET)
        keys = []
        for part in parts:
            try:
                Fernet(part.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                # the value itself is never echoed: it may be a real secret put in the wrong variable
                raise ConfigError(
                    f"{source} does not hold a Fernet key (url-safe base64 of 32 bytes)", hint=HOW_TO_SET
                ) from None
            keys.append(part.encode("ascii"))
        return cls(tuple(keys), source)

    def seal(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """A format-1 backup as a format-2 one: the whole document as a Fernet token under the current key, next
        to the point id and the content hashes (public, so history still shows what the point was)."""
        from cryptography.fernet import Fernet

        plain = json.dumps(doc, sort_keys=True, ensure_ascii=False, allow_nan=True)
        token = Fernet(self.keys[0]).encrypt(plain.encode("utf-8", "surrogatepass"))
        return {**public_part(doc), "format": ENCRYPTED, "key_id": self.current_id, "fernet": token.decode("ascii")}

    def open(self, doc: Mapping[str, Any], *, action_id: int) -> dict[str, Any]:
        """The format-1 document inside a format-2 backup; ConfigError when no key of this run made it."""
        from cryptography.fernet import Fernet, InvalidToken

        wanted = str(doc.get("key_id", ""))
        key = next((k for k in self.keys if key_id(k) == wanted), None)
        if key is None:
            raise ConfigError(
                f"the backup of quarantine action {action_id} was encrypted with key {wanted}, and {self.source} "
                f"holds {', '.join(key_id(k) for k in self.keys)}",
                hint=f"set {KEY_ENV} or {KEY_FILE_ENV} to the key with id {wanted} (old keys may follow the new "
                "one, comma-separated)",
            )
        try:
            plain = Fernet(key).decrypt(str(doc["fernet"]).encode("ascii"))
        except (InvalidToken, KeyError, UnicodeEncodeError):
            raise QuarantineError(
                f"the backup of quarantine action {action_id} does not decrypt with key {wanted}: the ledger row "
                "was altered",
                hint="restore the ledger from a backup; the store was not touched",
            ) from None
        inner: dict[str, Any] = json.loads(plain.decode("utf-8", "surrogatepass"))
        if public_part(inner) != public_part(doc):
            raise QuarantineError(
                f"the backup of quarantine action {action_id} does not match its recorded hashes",
                hint="restore the ledger from a backup; the store was not touched",
            )
        return inner


def public_part(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What a backup may show in clear: the point id and the content hashes (never vectors or payload)."""
    vectors = doc.get("vectors") or {}
    return {
        "id": doc.get("id"),
        "vectors": {name: {"hash": v.get("hash")} for name, v in vectors.items()},
        "payload_hash": doc.get("payload_hash"),
    }


def is_encrypted(doc: Mapping[str, Any] | None) -> bool:
    return doc is not None and doc.get("format") == ENCRYPTED and "fernet" in doc


def is_purged(doc: Mapping[str, Any] | None) -> bool:
    return doc is not None and "purged" in doc


def purged(doc: Mapping[str, Any], *, by: str, at: str) -> dict[str, Any]:
    """The backup with its content erased: id, hashes, format and key id stay, so history shows what it was."""
    kept = {k: doc[k] for k in ("format", "key_id") if k in doc}
    return {**public_part(doc), **kept, "purged": {"by": by, "at": at}}


def describe(doc: Mapping[str, Any] | None) -> str:
    """One word for listings: ``none``, ``plain``, ``encrypted (key ID)`` or ``purged``."""
    if not doc:
        return "none"
    if is_purged(doc):
        return "purged"
    if is_encrypted(doc):
        return f"encrypted (key {doc.get('key_id')})"
    return "plain"


def write_key_file(path: Path, key: bytes) -> None:
    """Write ``key`` to a new file readable by its owner only (mode 0600); an existing file is never replaced,
    since losing a key loses every backup encrypted with it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(
            f"{path} already exists", hint="choose a new file; an old key still opens old backups"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot create {path}: {e.strerror}", hint="choose a writable directory") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
    os.chmod(path, 0o600)  # O_CREAT's mode is filtered by the umask; make it exact


def _read_key_file(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise ConfigError(f"{KEY_FILE_ENV} names {path}, which does not exist", hint=HOW_TO_SET) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the key file {path}: {e}", hint=HOW_TO_SET) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the quarantine key file %s is readable by other users; `chmod 600 %s`", path, path)
    return text
