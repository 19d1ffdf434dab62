"""Login lockout, per account *and* address, and per address.

Failed logins are counted in the database (every instance sees them) under two keys:

- ``account:<email>|<address>``: one person's typos. After ``login_slowdown_after`` failures
  the answers slow down; after ``login_max_failures`` that account is refused *from that
  address* for ``login_lockout``. The same account from elsewhere, and every other account
  from this address, are unaffected.
- ``address:<address>``: password spraying across accounts. Only after
  ``login_address_max_failures`` (far above anyone's typos) is everything from the address
  refused.

The smoke-test accounts count and check only their own account key: the deploy's smoke login
shares an address with whoever else logs in there, and their failures must never fail a
deploy. Admins lift an account's locks with :func:`unlock` (every address at once).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.accounts.models import LoginThrottle, User
from clinic.core.config import Settings
from clinic.core.errors import TooManyAttempts

KEY_LENGTH = 300
"""``login_throttles.key`` is a String(300)."""
MAX_SLOWDOWN = 8.0


def account_prefix(email: str) -> str:
    """Every key of one account starts with this (an over-long email is digested)."""
    if len(email) > 200:
        email = "sha256=" + hashlib.sha256(email.encode()).hexdigest()
    return f"account:{email}|"


@dataclass(frozen=True, slots=True)
class Keys:
    account: str
    address: str | None
    """None for the smoke-test accounts: they are not counted per address."""

    @property
    def all(self) -> list[str]:
        return [self.account] if self.address is None else [self.account, self.address]


def keys_for(email: str, address: str, *, is_smoke: bool) -> Keys:
    account = (account_prefix(email) + address)[:KEY_LENGTH]
    return Keys(account=account, address=None if is_smoke else f"address:{address}"[:KEY_LENGTH])


async def check(
    session: AsyncSession,
    keys: Keys,
    now: datetime,
    settings: Settings,
    *,
    attempts: str = "failed logins",
) -> None:
    """Refuse (429) while a key is locked; slow down an account that keeps failing here.
    ``attempts`` names what was counted, for the message."""
    async with session.begin():
        rows = {
            row.key: row
            for row in await session.scalars(
                select(LoginThrottle).where(LoginThrottle.key.in_(keys.all))
            )
        }
    locked = [r.locked_until for r in rows.values() if r.locked_until and r.locked_until > now]
    if locked:
        wait = int((max(locked) - now).total_seconds()) + 1
        minutes = max(1, round(wait / 60))
        raise TooManyAttempts(
            f"Too many {attempts}. Try again in about {minutes} minute(s).", retry_after=wait
        )
    own = rows.get(keys.account)
    if own is not None and own.failures >= settings.login_slowdown_after:
        extra = own.failures - settings.login_slowdown_after
        await asyncio.sleep(min(settings.login_slowdown_seconds * (2**extra), MAX_SLOWDOWN))


async def record_failure(
    session: AsyncSession, keys: Keys, now: datetime, settings: Settings
) -> None:
    """Count a failed login under each key (inside the caller's transaction)."""
    await _count(session, keys.account, now, settings, settings.login_max_failures)
    if keys.address is not None:
        await _count(session, keys.address, now, settings, settings.login_address_max_failures)


async def _count(
    session: AsyncSession, key: str, now: datetime, settings: Settings, limit: int
) -> None:
    # Lock the counter row so concurrent failures on several instances all count.
    await session.execute(
        insert(LoginThrottle)
        .values(key=key, failures=0, first_failure_at=now)
        .on_conflict_do_nothing(index_elements=[LoginThrottle.key])
    )
    row = await session.scalar(
        select(LoginThrottle).where(LoginThrottle.key == key).with_for_update()
    )
    assert row is not None
    if row.first_failure_at < now - settings.login_lockout:
        row.failures, row.first_failure_at = 0, now  # old failures no longer count
    row.failures += 1
    if row.failures >= limit:
        row.locked_until = now + settings.login_lockout
        row.failures, row.first_failure_at = 0, now


async def succeeded(session: AsyncSession, keys: Keys) -> None:
    """A correct password clears this account's count here (not the address's)."""
    await session.execute(delete(LoginThrottle).where(LoginThrottle.key == keys.account))


@dataclass(frozen=True, slots=True)
class Lock:
    email: str
    address: str
    until: datetime
    user_id: int | None
    """None when no account has this email (someone guessed at it)."""


async def locked_accounts(session: AsyncSession, now: datetime) -> list[Lock]:
    """Accounts refused somewhere right now, soonest unlocked first (in a transaction)."""
    rows = await session.scalars(
        select(LoginThrottle)
        .where(LoginThrottle.key.startswith("account:"), LoginThrottle.locked_until > now)
        .order_by(LoginThrottle.locked_until)
    )
    found = []
    for row in rows:
        email, _, address = row.key.removeprefix("account:").rpartition("|")
        assert row.locked_until is not None
        found.append((email, address, row.locked_until))
    emails = {email for email, _, _ in found}
    owners = await session.execute(select(User.email, User.id).where(User.email.in_(emails)))
    ids = {email: user_id for email, user_id in owners}
    return [Lock(email, address, until, ids.get(email)) for email, address, until in found]


async def unlock(session: AsyncSession, email: str) -> int:
    """Lift every lock and count of the account, from every address (in a transaction)."""
    result = await session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.key.startswith(account_prefix(email), autoescape=True)
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
