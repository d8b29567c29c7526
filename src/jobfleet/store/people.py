"""People: console passwords (scrypt), console sessions and personal API tokens.

Session cookies and tokens are random values shown once; only their sha256 is
stored, so a copy of the database opens nothing. A session's CSRF token is made from
its cookie when needed, never stored. Passwords are salted scrypt
hashes, computed off the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.store.database import Database, now_ms
from jobfleet.store.secrets import hash_secret, new_secret
from jobfleet.store.tables import console_sessions, passwords, personal_tokens, users

# scrypt's cost: 16 MiB of memory and about 50 ms a check on one core
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD = 8
TOKEN_PREFIX = "jfp_"  # noqa: S105 (a marker, not a secret)


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    encode = base64.urlsafe_b64encode
    return (
        f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"
    )


def password_matches(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.urlsafe_b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


@dataclass(frozen=True)
class Session:
    username: str
    csrf: str
    expires_at: float


def csrf_of(cookie: str) -> str:
    """A session's CSRF token, made from its cookie's value: the store keeps only another
    digest of the cookie, from which this one cannot be made."""
    return hashlib.sha256(b"jobfleet-csrf:" + cookie.encode()).hexdigest()[:32]


class PeopleStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # passwords ------------------------------------------------------------------
    async def set_password(
        self, username: str, password: str, *, digest: str | None = None
    ) -> None:
        """``digest``: ``hash_password(password)``, when made ahead."""
        if len(password) < MIN_PASSWORD:
            raise JobError.invalid("password", f"at least {MIN_PASSWORD} characters")
        if digest is None:
            digest = await asyncio.to_thread(hash_password, password)
        async with self.db.begin() as conn:
            if (
                await conn.execute(select(users.c.username).where(users.c.username == username))
            ).first() is None:
                raise JobError(ErrorCode.NOT_FOUND, f"User {username!r} does not exist")
            done = await conn.execute(
                update(passwords)
                .where(passwords.c.username == username)
                .values(hash=digest, update_time=now_ms())
            )
            if not done.rowcount:
                await conn.execute(
                    insert(passwords).values(username=username, hash=digest, update_time=now_ms())
                )
            # a new password ends every open session of the user
            await conn.execute(
                delete(console_sessions).where(console_sessions.c.username == username)
            )

    async def check_password(self, username: str, password: str) -> bool:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(select(passwords.c.hash).where(passwords.c.username == username))
            ).first()
        if row is None:
            # as slow as a real check, so that timing tells nothing of who exists
            await asyncio.to_thread(hash_password, password)
            return False
        return await asyncio.to_thread(password_matches, password, str(row.hash))

    # sessions -------------------------------------------------------------------
    async def open_session(self, username: str, ttl: float) -> tuple[str, Session]:
        """A new session: the cookie value (shown once) and what it holds."""
        value = new_secret(32)
        session = Session(username, csrf_of(value), time.time() + ttl)
        async with self.db.begin() as conn:
            await conn.execute(
                delete(console_sessions).where(console_sessions.c.expires_at < time.time())
            )
            await conn.execute(
                insert(console_sessions).values(
                    id_hash=hash_secret(value),
                    username=username,
                    # the token is made from the cookie each time: none is stored
                    csrf="",
                    expires_at=session.expires_at,
                    create_time=now_ms(),
                )
            )
        return value, session

    async def session(self, value: str) -> Session | None:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(console_sessions).where(console_sessions.c.id_hash == hash_secret(value))
                )
            ).first()
        if row is None or row.expires_at < time.time():
            return None
        return Session(str(row.username), csrf_of(value), float(row.expires_at))

    async def close_session(self, value: str) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                delete(console_sessions).where(console_sessions.c.id_hash == hash_secret(value))
            )

    # personal tokens ------------------------------------------------------------
    async def create_token(self, username: str, ttl: float, note: str = "") -> dict[str, Any]:
        if ttl <= 0:
            raise JobError.invalid("expires_in", "must be positive")
        value = TOKEN_PREFIX + new_secret(32)
        expires_at = time.time() + ttl
        async with self.db.begin() as conn:
            result = await conn.execute(
                insert(personal_tokens).values(
                    token_hash=hash_secret(value),
                    username=username,
                    note=note[:255],
                    expires_at=expires_at,
                    create_time=now_ms(),
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            token_id = int(key[0])
        return {"id": token_id, "token": value, "expires_at": int(expires_at), "note": note}

    async def token_user(self, value: str) -> str | None:
        held = await self.token_holder(value)
        return None if held is None else held[0]

    async def token_holder(self, value: str) -> tuple[str, float] | None:
        """The user and expiry (epoch seconds) of a live token, None when it is not."""
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(personal_tokens.c.username, personal_tokens.c.expires_at).where(
                        personal_tokens.c.token_hash == hash_secret(value)
                    )
                )
            ).first()
        if row is None or row.expires_at < time.time():
            return None
        return str(row.username), float(row.expires_at)

    async def list_tokens(self, username: str) -> list[dict[str, Any]]:
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(
                    personal_tokens.c.id,
                    personal_tokens.c.note,
                    personal_tokens.c.expires_at,
                    personal_tokens.c.create_time,
                )
                .where(personal_tokens.c.username == username)
                .order_by(personal_tokens.c.id)
            )
            return [
                {
                    "id": int(r.id),
                    "note": r.note,
                    "expires_at": int(r.expires_at),
                    "create_time": int(r.create_time),
                }
                for r in rows
            ]

    async def revoke_token(self, username: str, token_id: int) -> None:
        async with self.db.begin() as conn:
            done = await conn.execute(
                delete(personal_tokens).where(
                    personal_tokens.c.id == token_id, personal_tokens.c.username == username
                )
            )
        if not done.rowcount:
            raise JobError(ErrorCode.NOT_FOUND, f"Token {token_id} does not exist")

    async def revoke_tokens(self, username: str) -> int:
        """Every token of ``username``; how many there were."""
        async with self.db.begin() as conn:
            done = await conn.execute(
                delete(personal_tokens).where(personal_tokens.c.username == username)
            )
        return int(done.rowcount or 0)
