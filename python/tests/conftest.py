"""A real S3 server for the session: ``s3-ordered serve`` over a temporary directory."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
