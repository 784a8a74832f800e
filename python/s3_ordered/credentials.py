"""The shape of what a ``credential_provider`` returns (see ``Client``)."""

from __future__ import annotations

import datetime
from typing import Callable, TypedDict

__all__ = ["CredentialDict", "CredentialProvider"]


class _Keys(TypedDict):
    access_key_id: str
    secret_access_key: str


class CredentialDict(_Keys, total=False):
    """Keys, with an optional session token (``token`` or ``session_token``) and
    ``expires_at``: an aware ``datetime`` or seconds since the epoch. Without it the
    credentials are kept for the client's life; with it the client calls the provider again
    before then."""

    token: str | None
    session_token: str | None
    expires_at: datetime.datetime | float | None


CredentialProvider = Callable[[], CredentialDict]
"""A callable that takes no arguments and returns a ``CredentialDict``."""
