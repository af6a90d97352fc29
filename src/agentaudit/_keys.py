"""Secret keys for the keyed chain: one key signs, a keyring verifies.

Why keys at all: an unkeyed hash chain shows an edit made with ordinary tools, but
anyone who can write the file can also recompute every hash after an edit. With a
secret key the event hashes and run seals are HMAC-SHA256, which nobody without the
key can recompute. Each keyed run stores the id of the key that sealed it, so keys
can rotate: a new key signs new runs, the keyring keeps the old ones to verify.

Where a key comes from, first match wins: the ``key=`` argument of a store; the
``AGENTAUDIT_KEY`` environment variable (the secret itself); the file named by
``AGENTAUDIT_KEY_FILE``. A key file holds one secret per line (blank lines and
``#`` comments ignored): the first signs, every line verifies.

A key id is derived from the secret (a one-way hash, 16 hex digits): it names the key
without revealing it, and the same secret always has the same id.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "KEY_ENV",
    "KEY_FILE_ENV",
    "MIN_SECRET_BYTES",
    "ChainKey",
    "Keyring",
    "keyring_from",
    "load_key_file",
]

KEY_ENV = "AGENTAUDIT_KEY"
KEY_FILE_ENV = "AGENTAUDIT_KEY_FILE"
# HMAC takes any length; a short secret is guessable offline from one stored hash.
MIN_SECRET_BYTES = 16


def _key_id(secret: bytes) -> str:
    return hashlib.sha256(b"agentaudit key id\n" + secret).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ChainKey:
    """One secret (at least 16 bytes; text is taken as its UTF-8 bytes)."""

    secret: bytes = field(repr=False)
    key_id: str = ""

    def __post_init__(self) -> None:
        secret = self.secret
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
            object.__setattr__(self, "secret", secret)
        if not isinstance(secret, (bytes, bytearray)):
            raise TypeError(f"a chain key is bytes or str, got {type(secret).__name__}")
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"a chain key needs at least {MIN_SECRET_BYTES} bytes of secret, got {len(secret)}"
            )
        object.__setattr__(self, "secret", bytes(secret))
        if not self.key_id:
            object.__setattr__(self, "key_id", _key_id(self.secret))

    def mac(self, message: bytes) -> str:
        """HMAC-SHA256 of ``message`` (hex)."""
        return hmac.digest(self.secret, message, "sha256").hex()


class Keyring(Mapping[str, ChainKey]):
    """Keys by id. The first key given signs; all of them verify."""

    def __init__(self, keys: Iterable[ChainKey | bytes | bytearray | str]) -> None:
        made = [k if isinstance(k, ChainKey) else ChainKey(_secret(k)) for k in keys]
        if not made:
            raise ValueError("a keyring needs at least one key")
        self._keys = {k.key_id: k for k in reversed(made)}  # the first wins a repeated id
        self.signing: ChainKey = made[0]

    def __getitem__(self, key_id: str) -> ChainKey:
        return self._keys[key_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Keyring(signing={self.signing.key_id!r}, ids={sorted(self._keys)!r})"


def _secret(value: bytes | bytearray | str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise TypeError(f"a chain key is bytes or str, got {type(value).__name__}")


def load_key_file(path: str | os.PathLike[str]) -> Keyring:
    """The keyring in a key file (one secret per line; the first signs)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read the key file {os.fspath(path)!r}: {exc.strerror}") from None
    secrets = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not secrets:
        raise ValueError(f"the key file {os.fspath(path)!r} holds no key")
    return Keyring(secrets)


def keyring_from(key: Any = None, *, environ: Mapping[str, str] | None = None) -> Keyring | None:
    """The keyring for ``key`` (a `Keyring`, a `ChainKey`, a secret as bytes or str,
    or a list of them, the first signing); with ``key=None`` the environment's
    (``AGENTAUDIT_KEY``, then ``AGENTAUDIT_KEY_FILE``); None when there is none.
    ``key=False`` means no key, whatever the environment says."""
    if key is False:
        return None
    if key is None:
        env = os.environ if environ is None else environ
        if env.get(KEY_ENV):
            return Keyring([env[KEY_ENV]])
        if env.get(KEY_FILE_ENV):
            return load_key_file(env[KEY_FILE_ENV])
        return None
    if isinstance(key, Keyring):
        return key
    if isinstance(key, (ChainKey, bytes, bytearray, str)):
        return Keyring([key])
    if isinstance(key, Iterable):
        return Keyring(list(key))
    raise TypeError(f"key must be a secret (bytes or str), a ChainKey or a Keyring, got {type(key).__name__}")
