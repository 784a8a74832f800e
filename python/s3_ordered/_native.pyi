"""Type stubs of the extension module ``s3_ordered._native``."""

import os
from collections.abc import Iterable, Iterator
from typing import Literal, TypeAlias, final, overload

from .credentials import CredentialProvider

__all__ = [
    "Body",
    "Chunk",
    "Client",
    "ListIterator",
    "Object",
    "ObjectError",
    "ObjectIterator",
]

KeyItem: TypeAlias = str | tuple[str, int | None] | tuple[str, int | None, str | None]

class MemoryHeldError(RuntimeError):
    """``next()`` cannot go on: the objects already handed out hold the memory (``max_bytes``)
    the next one needs, and nothing else is in flight. Read or release their bodies, then call
    ``next()`` again (the iteration is not closed); or raise ``max_bytes``."""

class ObjectError(Exception):
    """The failure of one object (or of a listing); the message carries the cause chain."""

    key: str | None
    """The object's key (``None`` for a listing)."""
    seq: int | None
    """The object's position in the input."""
    kind: str
    """What went wrong: ``"not_found"``, ``"access_denied"``, ``"throttled"``, ``"timeout"``,
    ``"connection"``, ``"invalid_request"``, ..."""
    status: int | None
    """The HTTP status of the last reply, if there was one."""
    code: str | None
    """The S3 error code (``"NoSuchKey"``), if the reply had one."""
    attempts: int
    """Requests made for the object (throttled ones are not counted)."""

@final
class Body:
    """The bytes of one object. Iterating yields read-only ``memoryview`` chunks of the
    client's own memory (no copy); each chunk's memory returns to the budget when its views
    are released. A streaming body's parts arrive while it is read."""

    @property
    def streaming(self) -> bool:
        """True when the object is larger than half of ``max_bytes`` and arrives part by part."""
    def read(self) -> bytes:
        """The rest of the body as one ``bytes`` (copied once); the memory returns at once.
        A second call returns ``b""``."""
    def __len__(self) -> int:
        """The object's size in bytes."""
    def __iter__(self) -> Iterator[memoryview]: ...
    def __next__(self) -> memoryview: ...

@final
class Chunk:
    """The memory behind one chunk's views (held by the views; not made directly)."""

    def __len__(self) -> int: ...

@final
class Object:
    """One object of a ``get_all``, at its position in the input."""

    key: str
    """The key it was asked for with."""
    seq: int
    """Its position in the input, from 0."""
    etag: str | None
    """The ETag the server sent, quotes included."""
    version_id: str | None
    """The version id the server sent, if any."""
    last_modified: float | None
    """When the object was last written (its ``Last-Modified``), in seconds since the epoch as
    ``time.time()`` gives them, or None when no reply stated it."""
    checksum: str | None
    """The algorithm its bytes were verified with (``"CRC64NVME"``, ``"CRC32C"``, ``"CRC32"``,
    ``"SHA256"``, ``"SHA1"``), or None. A streaming body is verified as it is read: a mismatch
    raises at its end."""
    checksum_status: Literal["verified", "verified_parts", "no_checksum", "composite", "off"]
    """``"verified"`` (against the object's checksum), ``"verified_parts"`` (against each part's
    checksum of a multipart upload whose checksum is composite), or why not: the server has no
    checksum, only a composite one whose parts' checksums could not be had, or
    ``checksum_mode="off"``."""
    body: Body
    """The object's bytes."""
    def read(self) -> bytes:
        """The whole body as ``bytes``; see ``Body.read``."""

@final
class ObjectIterator(Iterator[Object]):
    """The results of one ``get_all``, in input order. Dropping it, or ``close()``, cancels
    the downloads still in flight."""

    def __iter__(self) -> ObjectIterator: ...
    def __next__(self) -> Object: ...
    def __enter__(self) -> ObjectIterator: ...
    def __exit__(self, *exc: object) -> bool:
        """Closes the iteration, whether or not it was read to the end."""
    def close(self) -> None:
        """Cancels the downloads still in flight and returns their memory."""

class _ReturningIterator(Iterator[Object | ObjectError]):
    def __iter__(self) -> _ReturningIterator: ...
    def __next__(self) -> Object | ObjectError: ...
    def __enter__(self) -> _ReturningIterator: ...
    def __exit__(self, *exc: object) -> bool: ...
    def close(self) -> None: ...

@final
class ListIterator(Iterator[tuple[str, int | None]]):
    """The keys under a prefix as ``(key, size)``, in S3's order, one page at a time."""

    def __iter__(self) -> ListIterator: ...
    def __next__(self) -> tuple[str, int | None]: ...

@final
class Client:
    """A client with three budgets shared by all its calls: connections open at once,
    connections per ``get_all``, and body memory (``max_bytes``).

    What is not given comes from the AWS conventions, as the AWS CLI reads them:
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, the region (``AWS_REGION``, the profile's,
    the instance's), ``AWS_PROFILE``, ``AWS_CA_BUNDLE``, ``HTTPS_PROXY`` / ``HTTP_PROXY`` /
    ``NO_PROXY``, and credentials from the AWS default chain: the ``AWS_*`` key variables, web
    identity, the shared files' profile (keys, ``role_arn``, ``credential_process``, SSO),
    container credentials, then the instance's role (IMDSv2). A bad setting, or no credentials
    anywhere, raises ``ValueError`` naming it."""

    def __new__(
        cls,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        max_connections: int = 64,
        max_connections_per_request: int | None = None,
        max_bytes: int | str | None = None,
        path_style: bool | None = None,
        anonymous: bool = False,
        ca_bundle: str | os.PathLike[str] | None = None,
        *,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        credential_provider: CredentialProvider | None = None,
        request_payer: Literal["requester"] | None = None,
        expected_bucket_owner: str | None = None,
        sse_customer_key: bytes | None = None,
        transport: Literal["native", "hyper"] | None = None,
        checksum_mode: Literal["when_available", "required", "off"] = "when_available",
        hedge: bool = True,
        min_body_rate: int | str | None = None,
        body_rate_window: float = 5.0,
        s3_express_sessions: bool = True,
    ) -> Client:
        """``max_bytes`` is an int or a size such as ``"512MiB"`` (default ``"256MiB"``).
        ``ca_bundle``: a PEM file of CA certificates to trust for https, besides the usual
        roots (default: ``AWS_CA_BUNDLE``, then the profile's ``ca_bundle``).

        Credentials, instead of the default chain: ``aws_access_key_id`` with
        ``aws_secret_access_key`` (and ``aws_session_token``), or ``credential_provider``, a
        callable returning a ``CredentialDict``; it is called again before ``expires_at``.
        ``request_payer="requester"`` pays for a requester-pays bucket,
        ``expected_bucket_owner`` (a 12-digit account ID) refuses a bucket of another account,
        and ``sse_customer_key`` (32 bytes) reads SSE-C encrypted objects.
        ``transport="hyper"`` has hyper's HTTP/1.1 client carry the requests instead of the
        library's own (default ``"native"``, which is faster).
        ``checksum_mode``: verify every object against the checksum the server stores
        (``"when_available"``, the default), fail objects without one (``"required"``, error
        kind ``"checksum_missing"``), or check nothing (``"off"``). A mismatch is sent again
        once, then raises an ``ObjectError`` of kind ``"checksum_mismatch"``.
        ``hedge``: send a GET whose reply is late (1.5 × the 95th percentile of recent first
        bytes, at least 30 ms) once more on another connection, the first reply winning
        (default on; within the connection budgets and 2 % more GETs).
        ``min_body_rate``: a body bringing fewer bytes per second than this (an int or a size
        such as ``"64KiB"``, the default; ``0`` turns it off) over ``body_rate_window``
        seconds is resumed from its first missing byte on a new connection, at most twice
        per part.
        A directory bucket of S3 Express One Zone (a name ending ``--x-s3``) needs no option:
        its requests go to its zone's endpoint (when no ``endpoint_url`` is given), signed with
        a session made once per bucket and renewed before it expires (``stats()`` counts
        ``sessions_created``). ``s3_express_sessions=False`` signs them with the credentials
        themselves, for a server that takes such names but has no ``CreateSession``.
        Each connection is a file descriptor: the process's soft ``RLIMIT_NOFILE`` is raised
        toward its hard limit as far as ``max_connections`` (and 256 more) want. Under a lower
        limit the client works over fewer connections (``stats()["connection_limit"]``)."""
    @overload
    def get_all(
        self,
        bucket: str,
        keys: Iterable[KeyItem],
        *,
        errors: Literal["raise"] = "raise",
        held_memory_timeout: float | None = 5.0,
    ) -> ObjectIterator:
        """``held_memory_timeout``: how many seconds ``next()`` waits, when the objects already
        handed out hold the memory the next one needs and nothing else is in flight, before it
        raises ``MemoryHeldError`` (another thread may release bodies meanwhile); ``None``
        waits for ever."""
    @overload
    def get_all(
        self,
        bucket: str,
        keys: Iterable[KeyItem],
        *,
        errors: Literal["return"],
        held_memory_timeout: float | None = 5.0,
    ) -> _ReturningIterator: ...
    def list(self, bucket: str, prefix: str) -> ListIterator:
        """The keys under ``prefix`` as ``(key, size)``, in the server's order (lexicographic,
        but for a directory bucket's); feeds ``get_all`` directly."""
    def stats(self) -> dict[str, int]:
        """Counters and gauges: objects, bytes, requests, retries, throttled,
        region_redirects, stale_connections, errors, checksums_verified,
        checksums_unavailable, checksum_mismatches, checksum_heads, hedges_sent, hedges_won,
        slow_bodies_resumed, sessions_created, connection_limit, open_connections, bytes_in_use,
        delivered_bytes_in_use (held by bodies handed out), parts_waiting_for_memory, ..."""
