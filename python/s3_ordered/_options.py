"""Client options handed to workers (Ray's read tasks, a DataLoader's workers): checked where
they are given, used where each worker makes its own ``Client``."""

from __future__ import annotations

from typing import Any

from ._native import Client

# Options that give credentials: a worker may have its own, so they are not checked where the
# options are given, and they reach the workers untouched.
CREDENTIAL_OPTIONS = frozenset(
    {
        "anonymous",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "credential_provider",
    }
)


def checked(client_options: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``client_options``, refused here (``ValueError``) if a worker's ``Client``
    would refuse it, credentials aside."""
    options = dict(client_options or {})
    Client(**{k: v for k, v in options.items() if k not in CREDENTIAL_OPTIONS}, anonymous=True)
    return options
