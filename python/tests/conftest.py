"""A real S3 server for the session: ``s3-ordered serve`` over a temporary directory."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ACCESS_KEY = "PYTESTACCESSKEY"
SECRET_KEY = "pytest-secret-key"
BUCKET = "py-bucket"
REPO = Path(__file__).resolve().parents[2]


def content(i: int, size: int) -> bytes:
    """Deterministic bytes for object ``i``, so every body can be checked."""
    return bytes((j * 31 + i) & 0xFF for j in range(size))


# Keys that need escaping in a URL or a signature, each with its bytes.
AWKWARD = [
    "with space.txt",
    "unicodé/ключ/鍵.bin",
    "plus+sign&amp=eq",
    "percent%41literal",
    "tilde~star*paren(1)",
    "deep/a/b/c/d/e.bin",
]


@dataclass
class Server:
    url: str
    root: Path
    # key -> bytes, for every object written to BUCKET
    objects: dict[str, bytes]


def _binary() -> str:
    given = os.environ.get("S3_ORDERED_BIN")
    if given:
        return given
    subprocess.run(["cargo", "build", "--quiet", "-p", "s3-ordered-cli"], cwd=REPO, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return str(target / "debug" / "s3-ordered")


def put(root: Path, key: str, data: bytes) -> None:
    path = root / BUCKET / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("s3root")
    objects: dict[str, bytes] = {}
    for i in range(60):
        objects[f"obj/{i:04d}"] = content(i, (i * 977) % 5000)
    for i, key in enumerate(AWKWARD):
        objects[key] = content(100 + i, 100 + i)
    objects["big/three-mib"] = content(7, 3 << 20)
    for key, data in objects.items():
        put(root, key, data)
    with serving(root, [], "http") as url:
        yield Server(url=url, root=root, objects=objects)


@contextlib.contextmanager
def serving(root: Path, extra: list[str], scheme: str) -> Iterator[str]:
    """Runs ``s3-ordered serve`` over ``root`` (with ``extra`` flags) and yields its URL."""
    proc = subprocess.Popen(
        [_binary(), "serve", "--root", str(root), "--addr", "127.0.0.1:0"]
        + ["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY]
        + extra,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split()[-1] if line else ""
        assert url.startswith(f"{scheme}://127.0.0.1:"), f"no address from serve: {line!r}"
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA, and a certificate it signs for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s3-ordered pytest CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@dataclass
class HttpsServer:
    url: str
    ca: Path
    objects: dict[str, bytes]


@pytest.fixture(scope="session")
def https_server(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsServer]:
    """The same objects as ``server``, over https with a certificate of a private CA."""
    ca, cert, key = make_certificates(tmp_path_factory.mktemp("certs"))
    flags = ["--tls-cert", str(cert), "--tls-key", str(key)]
    with serving(server.root, flags, "https") as url:
        yield HttpsServer(url=url, ca=ca, objects=server.objects)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials in the environment, no shared files from the user's home, no proxy, and
    the instance metadata service turned off: the credential chain must never reach it."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)


class Recorder:
    """A proxy in front of a server that records the keys of the object GETs it forwards, in
    arrival order, and the most it held in flight at once; ``gate`` holds the GETs of keys
    under a prefix until that many are in flight together (or ``timeout`` seconds pass)."""

    def __init__(self, upstream: str, bucket: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.bucket = bucket
        self.gets: list[str] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._gate: tuple[str, int, float] | None = None
        self._cond = threading.Condition()
        recorder = self

        class Handler(_Forward):
            pass

        Handler.recorder = recorder
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        with self._cond:
            self.gets = []
            self.max_in_flight = 0

    def gate(self, prefix: str, count: int, timeout: float = 10.0) -> None:
        with self._cond:
            self._gate = (prefix, count, timeout)

    def enter(self, key: str) -> None:
        with self._cond:
            self.gets.append(key)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            self._cond.notify_all()
            gate = self._gate
            if gate is not None and key.startswith(gate[0]):
                self._cond.wait_for(lambda: self._in_flight >= gate[1], timeout=gate[2])

    def leave(self) -> None:
        with self._cond:
            self._in_flight -= 1

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _Forward(http.server.BaseHTTPRequestHandler):
    """Forwards each GET or HEAD to the recorder's upstream unchanged (the Host header too, so
    that signatures hold) over one upstream connection per client connection."""

    protocol_version = "HTTP/1.1"
    recorder: Recorder
    _HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()

    def _forward(self) -> None:
        rec = self.recorder
        prefix = f"/{rec.bucket}/"
        key = None
        if self.command == "GET" and self.path.startswith(prefix) and "?" not in self.path:
            key = urllib.parse.unquote(self.path[len(prefix) :])
            rec.enter(key)
        try:
            conn = getattr(self, "_upstream", None)
            if conn is None:
                conn = http.client.HTTPConnection(*rec.upstream, timeout=30)
                self._upstream = conn
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in self._HOP:
                    conn.putheader(name, value)
            conn.endheaders()
            resp = conn.getresponse()
            body = resp.read()
        finally:
            if key is not None:
                rec.leave()
        self.send_response_only(resp.status, resp.reason)
        for name, value in resp.getheaders():
            if name.lower() not in self._HOP:
                self.send_header(name, value)
        length = resp.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@pytest.fixture
def recorder(server: Server) -> Iterator[Recorder]:
    """A recording proxy in front of the session's server (see ``Recorder``)."""
    rec = Recorder(server.url, BUCKET)
    yield rec
    rec.close()
