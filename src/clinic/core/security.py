"""Password hashing, password rules, CSRF tokens and API token material."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import lru_cache
from importlib.resources import files

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown email as slow as one for a known email.
_DUMMY_HASH = _hasher.hash("not a real password, only for timing")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; constant work whether or not the account exists."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    text = (files("clinic") / "data" / "common-passwords.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def password_problem(password: str, *, min_length: int, email: str = "") -> str | None:
    """Why ``password`` is refused, or None when it is acceptable."""
    if len(password) < min_length:
        return f"Use at least {min_length} characters."
    if len(password) > 1024:
        return "Use at most 1024 characters."
    lowered = password.lower()
    if lowered in _common_passwords() or lowered.rstrip("0123456789!") in _common_passwords():
        return "This password is too common; choose one that is hard to guess."
    local = email.split("@", 1)[0].lower()
    if local and len(local) >= 4 and local in lowered:
        return "Do not use your email address in your password."
    return None


def new_token() -> str:
    """A random URL-safe secret (API tokens, CSRF tokens)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What is stored for an API token: its SHA-256 (the token itself is shown once)."""
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
