"""Encryption of values that must never be stored in clear text (sensitive params, passwords)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

PREFIX = "enc:v1:"
MASK = "******"


class Cipher:
    def __init__(self, key: bytes, source: str = "the secret key") -> None:
        self._fernet = Fernet(key)
        self._key = key
        # where the key came from, for an operator told that it is the wrong one
        self.source = source

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> Cipher:
        """Key from ``JOBFLEET_SECRET_KEY`` (shared by every node) or ``DIR/secret.key``."""
        env = os.environ.get("JOBFLEET_SECRET_KEY")
        if env:
            # stripped as the file's is: a key from a secret mounted as a file often
            # ends in a newline, which Fernet ignores and the cluster's check must too
            return cls(env.strip().encode(), "JOBFLEET_SECRET_KEY")
        path = data_dir / "secret.key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key())
        return cls(path.read_bytes().strip(), str(path))

    def check_value(self) -> str:
        """Equal on two nodes exactly when they hold the same key; tells nothing of it."""
        return hmac.new(self._key, b"jobfleet cluster key check", hashlib.sha256).hexdigest()

    def seal_bytes(self, data: bytes) -> bytes:
        """Bytes that leave the process (between nodes), readable only with the key."""
        return self._fernet.encrypt(data)

    def open_bytes(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise ValueError("sealed with another key, or altered") from None

    def encrypt(self, value: str) -> str:
        return PREFIX + self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, value: str) -> str:
        if not value.startswith(PREFIX):
            return value
        try:
            return self._fernet.decrypt(value[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise ValueError("value was encrypted with another key") from None


def new_secret(nbytes: int = 24) -> str:
    # a leading "-" would read as an option on a command line (--enroll-token -x…)
    while True:
        value = secrets.token_urlsafe(nbytes)
        if not value.startswith("-"):
            return value


def hash_secret(value: str) -> str:
    # secrets are random and long, so a fast unsalted digest cannot be brute-forced
    return hashlib.sha256(value.encode()).hexdigest()


def secret_matches(value: str, digest: str) -> bool:
    return hmac.compare_digest(hash_secret(value), digest)
