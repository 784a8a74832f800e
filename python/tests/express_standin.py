"""A stand-in for a directory bucket of S3 Express One Zone, on 127.0.0.1, path-style.

``GET /BUCKET/?session`` is ``CreateSession``: signed with the base keys for ``s3express``,
asking for a ``ReadOnly`` session, without ``x-amz-s3session-token``. Every other request must be
signed with a live session's keys for ``s3express``, carry its token in
``x-amz-s3session-token`` and no ``x-amz-security-token``. Signatures are recomputed here with
SigV4 written from its specification (independently of the client). It serves GET (whole or
one range), HEAD and ListObjectsV2 (keys in reverse order: a directory bucket's order is not
lexicographic), and counts sessions, refusals and bad requests.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.server
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

BUCKET = "py--use1-az4--x-s3"


@dataclass
class Session:
    secret: str
    token: str
    expires: datetime.datetime
    dropped: bool = False


@dataclass
class State:
    base_key: str
    base_secret: str
    objects: dict[str, bytes]
    life: datetime.timedelta
    sessions: dict[str, Session] = field(default_factory=dict)
    created: int = 0
    refusals: int = 0
    served: int = 0
    bad: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def drop_sessions(self) -> None:
        with self.lock:
            for s in self.sessions.values():
                s.dropped = True


def _sign(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _encode(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def expected_authorization(
    method: str, target: str, headers: dict[str, str], key_id: str, secret: str
) -> str:
    """The ``Authorization`` a request with these fields should carry, from the scope and
    signed headers its own ``Authorization`` names."""
    auth = headers["authorization"]
    scope = auth.split("Credential=")[1].split(",")[0].split("/", 1)[1]
    signed = auth.split("SignedHeaders=")[1].split(",")[0]
    path, _, query = target.partition("?")
    params = []
    for param in query.split("&") if query else []:
        name, _, value = param.partition("=")
        params.append((_encode(urllib.parse.unquote(name)), _encode(urllib.parse.unquote(value))))
    canonical_query = "&".join(f"{k}={v}" for k, v in sorted(params))
    canonical_headers = "".join(
        f"{name}:{' '.join(headers[name].split())}\n" for name in signed.split(";")
    )
    canonical = "\n".join(
        [
            method,
            path,
            canonical_query,
            canonical_headers,
            signed,
            headers["x-amz-content-sha256"],
        ]
    )
    date, region, service, _ = scope.split("/")
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            headers["x-amz-date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    signing_key = _sign(("AWS4" + secret).encode(), date)
    for part in (region, service, "aws4_request"):
        signing_key = _sign(signing_key, part)
    signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={signed}, "
        f"Signature={signature}"
    )


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(head=False)

    def _reply(self, status: int, body: bytes, fields: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (fields or {}).items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str) -> None:
        self._reply(status, f"<Error><Code>{code}</Code></Error>".encode())

    def _bad(self, why: str) -> None:
        with self.state.lock:
            self.state.bad.append(why)
        self._error(403, "SignatureDoesNotMatch")

    def _signature_ok(self, key_id: str, secret: str) -> str | None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        auth = headers.get("authorization", "")
        if f"Credential={key_id}/" not in auth or "/s3express/aws4_request" not in auth:
            return f"signed as {auth[:80]!r}"
        want = expected_authorization(self.command, self.path, headers, key_id, secret)
        return None if want == auth else f"signature mismatch for {self.path}"

    def _serve(self, head: bool) -> None:
        s = self.state
        path, _, query = self.path.partition("?")
        if query == "session":
            self._create_session()
            return
        if self.headers.get("x-amz-security-token") is not None:
            self._bad("a data request carried x-amz-security-token")
            return
        token = self.headers.get("x-amz-s3session-token")
        auth = self.headers.get("authorization", "")
        key_id = auth.split("Credential=")[1].split("/")[0] if "Credential=" in auth else ""
        with s.lock:
            session = s.sessions.get(key_id)
        if session is None or token != session.token:
            self._bad(f"no session {key_id!r} with that token")
            return
        why = self._signature_ok(key_id, session.secret)
        if why:
            self._bad(why)
            return
        now = datetime.datetime.now(datetime.timezone.utc)
        if session.dropped or now >= session.expires:
            with s.lock:
                s.refusals += 1
            self._error(
                403 if session.dropped else 400,
                "InvalidToken" if session.dropped else "ExpiredToken",
            )
            return
        with s.lock:
            s.served += 1
        key = urllib.parse.unquote(path)[len(f"/{BUCKET}/") :]
        if key == "" and "list-type=2" in query:
            self._list(query)
            return
        body = s.objects.get(key)
        if body is None:
            self._error(404, "NoSuchKey")
            return
        fields = {"etag": f'"{hashlib.md5(body).hexdigest()}"'}
        rng = self.headers.get("range")
        if rng:
            first, last = (int(x) for x in rng.removeprefix("bytes=").split("-"))
            last = min(last, len(body) - 1)
            fields["content-range"] = f"bytes {first}-{last}/{len(body)}"
            self._reply(206, body[first : last + 1], fields)
        else:
            self._reply(200, body, fields)

    def _create_session(self) -> None:
        s = self.state
        if self.headers.get("x-amz-s3session-token") is not None:
            self._bad("CreateSession carried a session token")
            return
        if self.headers.get("x-amz-create-session-mode") != "ReadOnly":
            self._bad("CreateSession did not ask for a ReadOnly session")
            return
        why = self._signature_ok(s.base_key, s.base_secret)
        if why:
            self._bad(f"CreateSession: {why}")
            return
        with s.lock:
            s.created += 1
            n = s.created
            now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
            session = Session(f"session/secret{n}", f"TOKEN{n}+/=", now + s.life)
            s.sessions[f"ASIAPY{n:04d}"] = session
        expiration = session.expires.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = (
            "<CreateSessionResult><Credentials>"
            f"<SessionToken>{escape(session.token)}</SessionToken>"
            f"<SecretAccessKey>{escape(session.secret)}</SecretAccessKey>"
            f"<AccessKeyId>ASIAPY{n:04d}</AccessKeyId><Expiration>{expiration}</Expiration>"
            "</Credentials></CreateSessionResult>"
        )
        self._reply(200, body.encode())

    def _list(self, query: str) -> None:
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        if "start-after" in params:
            self._error(400, "InvalidArgument")
            return
        prefix = params.get("prefix", "")
        keys = sorted((k for k in self.state.objects if k.startswith(prefix)), reverse=True)
        contents = "".join(
            f"<Contents><Key>{escape(k)}</Key><Size>{len(self.state.objects[k])}</Size></Contents>"
            for k in keys
        )
        body = f"<ListBucketResult>{contents}<IsTruncated>false</IsTruncated></ListBucketResult>"
        self._reply(200, body.encode())


@contextmanager
def serving(
    base_key: str, base_secret: str, objects: dict[str, bytes], life_seconds: int = 300
) -> Iterator[tuple[str, State]]:
    """Runs the stand-in on 127.0.0.1; yields its URL and state."""
    state = State(base_key, base_secret, objects, datetime.timedelta(seconds=life_seconds))
    handler = type("Handler", (_Handler,), {"state": state})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
