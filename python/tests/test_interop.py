"""Interoperability with S3 servers this package was not built against: moto's server (from
PyPI) and s3rver (from npm), each started on 127.0.0.1 for this module, objects written and
read back with boto3. Listing, objects of every size, awkward keys, missing and denied objects,
checksums as each server states them, versions and ``If-Match`` go through the CLI and the
Python client, and every byte is compared with what boto3 reads.

Where a server departs from S3, the test says so beside the check and what S3 does instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

import s3_ordered
from conftest import AWKWARD, REPO, _binary

BUCKET = "interop"
VERSIONED = "interop-versioned"
REGION = "us-east-1"
MIB = 1 << 20

# Checksum algorithms as boto3 names them, and the package's names.
ALGORITHMS = {
    "CRC32": "CRC32",
    "CRC32C": "CRC32C",
    "SHA1": "SHA1",
    "SHA256": "SHA256",
    "CRC64NVME": "CRC64NVME",
}

S3RVER = REPO / "python" / "tests" / "interop" / "node_modules" / ".bin" / "s3rver"


def body(i: int, size: int) -> bytes:
    """Deterministic bytes for object ``i``, built fast for large objects. Unlike
    ``conftest.content``, whose bytes repeat every 256, they repeat every 65,537: no two upload
    parts of an object are alike, so parts taken out of order cannot pass a check."""
    block = bytes((j * 131 + i * 7) & 0xFF for j in range(min(size, 65_537)))
    return (block * (size // max(len(block), 1) + 1))[:size]


@dataclass
class Interop:
    """One server, its credentials, and what was written to it."""

    name: str
    url: str
    access_key: str
    secret_key: str
    # Objects of BUCKET, key -> bytes.
    objects: dict[str, bytes] = field(default_factory=dict)
    # Objects whose GET is refused (403).
    denied: list[str] = field(default_factory=list)
    # Checksummed objects (moto): key -> (algorithm, "verified" or "verified_parts").
    checksums: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Versions of one key in VERSIONED (moto): (key, version id, bytes), oldest first.
    versions: list[tuple[str, str, bytes]] = field(default_factory=list)
    # What boto3 read, by (bucket, key, options).
    boto_read: dict[tuple[str, str, tuple[Any, ...]], bytes] = field(default_factory=dict)

    def boto(self, secret: str | None = None) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret or self.secret_key,
        )

    def client(self, **options: Any) -> s3_ordered.Client:
        options.setdefault("aws_access_key_id", self.access_key)
        options.setdefault("aws_secret_access_key", self.secret_key)
        return s3_ordered.Client(endpoint_url=self.url, region=REGION, **options)

    def cli(self, *args: str, keys: str | None = None) -> subprocess.CompletedProcess[bytes]:
        env = dict(os.environ)
        env.update(
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            AWS_REGION=REGION,
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        )
        env.pop("AWS_SESSION_TOKEN", None)
        env.pop("AWS_PROFILE", None)
        return subprocess.run(
            [_binary(), *args, "--endpoint-url", self.url],
            input=keys.encode() if keys is not None else None,
            capture_output=True,
            env=env,
            timeout=300,
        )

    def read(self, key: str, bucket: str = BUCKET, **extra: Any) -> bytes:
        """The object's bytes as boto3 reads them (read once)."""
        at = (bucket, key, tuple(sorted(extra.items())))
        if at not in self.boto_read:
            got = self.boto().get_object(Bucket=bucket, Key=key, **extra)["Body"].read()
            self.boto_read[at] = got
        return self.boto_read[at]


@contextlib.contextmanager
def running(
    argv: list[str], log: Path, listening: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Runs a server that binds a port of its choosing on 127.0.0.1, its output into ``log``,
    and yields its URL once the log names the port (``listening``, a pattern whose group is
    the port) and the port accepts."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        port = None
        while True:
            if proc.poll() is not None:
                err = log.read_text(errors="replace")
                pytest.fail(f"{argv[0]} exited with {proc.returncode}: {err[-2000:]}")
            if port is None:
                found = re.search(listening, log.read_text(errors="replace"))
                port = int(found.group(1)) if found else None
            if port is not None:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"{argv[0]} did not start listening: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def put_common(srv: Interop) -> None:
    """What both servers hold: a listing past 1,000 keys, a tree, sizes, awkward keys."""
    s3 = srv.boto()
    objects = srv.objects
    for i in range(1_100):
        objects[f"list/k{i:05d}"] = body(i, i % 7)
    for i, key in enumerate(["tree/a/1", "tree/a/2", "tree/b/1", "tree/c", "tree/d/e/f", "tree0"]):
        objects[key] = body(2_000 + i, 10 + i)
    sizes = [0, 1, 100, 4_096, 65_536, 1_200_000, 20 * MIB + 3]
    for i, size in enumerate(sizes):
        objects[f"sizes/{i:02d}-{size}"] = body(3_000 + i, size)
    for i, key in enumerate(AWKWARD):
        objects[f"awk/{key}"] = body(4_000 + i, 100 + i)
    for key, data in objects.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)


def multipart(s3: Any, bucket: str, key: str, data: bytes, **checksum: str) -> None:
    """Uploads ``data`` in parts of 5 MiB (the last shorter), with ``checksum``'s options."""
    algorithm = checksum.get("ChecksumAlgorithm")
    up = s3.create_multipart_upload(Bucket=bucket, Key=key, **checksum)
    parts = []
    for n, at in enumerate(range(0, len(data), 5 * MIB), start=1):
        extra = {"ChecksumAlgorithm": algorithm} if algorithm else {}
        r = s3.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=up["UploadId"],
            PartNumber=n,
            Body=data[at : at + 5 * MIB],
            **extra,
        )
        part = {"PartNumber": n, "ETag": r["ETag"]}
        if algorithm:
            part[f"Checksum{algorithm}"] = r[f"Checksum{algorithm}"]
        parts.append(part)
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
    )


@pytest.fixture(scope="module", params=["moto", "s3rver"])
def interop(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Interop]:
    if request.param == "moto":
        yield from moto(tmp_path_factory.mktemp("moto"))
    else:
        yield from s3rver(tmp_path_factory.mktemp("s3rver"))


def moto(logs: Path) -> Iterator[Interop]:
    """moto's server with its IAM authentication on: signatures are checked, and a user's
    policy denies ``denied/``. The first three requests (making that user) need none."""
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"]
    with running(argv, logs / "moto.log", r"Running on http://127\.0\.0\.1:(\d+)", env) as url:
        iam = boto3.client(
            "iam",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                {
                    "Effect": "Deny",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{BUCKET}/denied/*",
                },
            ],
        }
        iam.put_user_policy(UserName="reader", PolicyName="p", PolicyDocument=json.dumps(policy))
        srv = Interop("moto", url, key["AccessKeyId"], key["SecretAccessKey"])
        s3 = srv.boto()
        s3.create_bucket(Bucket=BUCKET)
        put_common(srv)
        s3.put_object(Bucket=BUCKET, Key="denied/secret", Body=b"not for this user")
        srv.denied.append("denied/secret")
        # Every algorithm, in one PUT and as a multipart upload (composite, but CRC64NVME,
        # which S3 keeps full-object only); a multipart upload smaller than a client part.
        for i, alg in enumerate(ALGORITHMS):
            key_single = f"sum/single-{alg}"
            data = body(5_000 + i, 300_000 + i)
            s3.put_object(Bucket=BUCKET, Key=key_single, Body=data, ChecksumAlgorithm=alg)
            srv.objects[key_single] = data
            srv.checksums[key_single] = (ALGORITHMS[alg], "verified")
            key_multi = f"sum/multi-{alg}"
            data = body(5_100 + i, 11 * MIB + 12_345)
            if alg == "CRC64NVME":
                multipart(
                    s3, BUCKET, key_multi, data, ChecksumAlgorithm=alg, ChecksumType="FULL_OBJECT"
                )
                srv.checksums[key_multi] = (ALGORITHMS[alg], "verified")
            else:
                multipart(s3, BUCKET, key_multi, data, ChecksumAlgorithm=alg)
                srv.checksums[key_multi] = (ALGORITHMS[alg], "verified_parts")
            srv.objects[key_multi] = data
        data = body(5_200, 5 * MIB + 1_000)
        multipart(s3, BUCKET, "sum/multi-small-CRC32C", data, ChecksumAlgorithm="CRC32C")
        srv.objects["sum/multi-small-CRC32C"] = data
        srv.checksums["sum/multi-small-CRC32C"] = ("CRC32C", "verified_parts")
        # Three versions of one key.
        s3.create_bucket(Bucket=VERSIONED)
        s3.put_bucket_versioning(Bucket=VERSIONED, VersioningConfiguration={"Status": "Enabled"})
        for i in range(3):
            data = body(6_000 + i, 1_000 * (i + 1))
            r = s3.put_object(Bucket=VERSIONED, Key="v/obj", Body=data)
            srv.versions.append(("v/obj", r["VersionId"], data))
        yield srv


def s3rver(root: Path) -> Iterator[Interop]:
    """s3rver with its one account (``S3RVER``)."""
    binary = Path(os.environ.get("S3RVER_BIN", S3RVER))
    if not binary.exists():
        pytest.fail(
            f"s3rver is not installed at {binary}: run scripts/test, or "
            "`npm ci --prefix python/tests/interop`"
        )
    data = root / "data"
    argv = [str(binary), "-d", str(data), "-a", "127.0.0.1", "-p", "0"]
    argv += ["--configure-bucket", BUCKET]
    # Its listings' continuation tokens are DES-encrypted, which Node's OpenSSL 3 keeps in its
    # legacy provider.
    env = dict(os.environ, NODE_OPTIONS="--openssl-legacy-provider")
    listening = r"listening on 127\.0\.0\.1:(\d+)"
    with running(argv, root / "s3rver.log", listening, env) as url:
        srv = Interop("s3rver", url, "S3RVER", "S3RVER")
        put_common(srv)
        yield srv


def boto_listing(srv: Interop, prefix: str, **extra: Any) -> list[str]:
    """``SIZE<TAB>KEY`` and ``PRE<TAB>PREFIX`` lines as the CLI prints them, from boto3's
    pages, keys and prefixes merged in order."""
    lines: list[tuple[str, str]] = []
    pages = (
        srv.boto().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix, **extra)
    )
    for page in pages:
        for obj in page.get("Contents", []):
            lines.append((obj["Key"], f"{obj['Size']}\t{obj['Key']}"))
        for pre in page.get("CommonPrefixes", []):
            lines.append((pre["Prefix"], f"PRE\t{pre['Prefix']}"))
    return [line for _, line in sorted(lines, key=lambda kv: kv[0].encode())]


def test_listing_through_the_cli_and_python_is_boto3s(interop: Interop) -> None:
    srv = interop
    cases: list[tuple[list[str], str, dict[str, Any]]] = [
        ([], "list/", {}),
        (["--start-after", "list/k00997"], "list/", {"StartAfter": "list/k00997"}),
        (["--delimiter", "/"], "tree/", {"Delimiter": "/"}),
        ([], "awk/", {}),
    ]
    for flags, prefix, extra in cases:
        out = srv.cli("ls", f"s3://{BUCKET}/{prefix}", "--raw", *flags)
        assert out.returncode == 0, out.stderr
        want = boto_listing(srv, prefix, **extra)
        assert out.stdout.decode().splitlines() == want, (srv.name, flags, prefix)
    # Past 1,000 keys: more than one page.
    assert len(boto_listing(srv, "list/")) == 1_100
    listed = list(srv.client().list(BUCKET, "list/"))
    assert listed == [
        (k, len(srv.objects[k])) for k in sorted(srv.objects) if k.startswith("list/")
    ]


def test_objects_through_the_cli_are_boto3s(interop: Interop) -> None:
    srv = interop
    for prefix in ["sizes/", "awk/", "tree"]:
        keys = [k for k in sorted(srv.objects, key=str.encode) if k.startswith(prefix)]
        want = b"".join(srv.read(k) for k in keys)
        out = srv.cli("cat", f"s3://{BUCKET}/{prefix}", "--raw", "--part-size", "4MiB")
        assert out.returncode == 0, out.stderr
        assert out.stdout == want, (srv.name, prefix)
        assert f"{len(keys)} objects ok, 0 failed".encode() in out.stderr, out.stderr
    # A missing key among good ones: its own error, the others' bytes, exit 1.
    keys = ["sizes/02-100", "nope/missing", f"awk/{AWKWARD[2]}"]
    out = srv.cli("cat", f"s3://{BUCKET}", "--keys-from", "-", keys="\n".join(keys) + "\n")
    assert out.returncode == 1, out.stderr
    assert out.stdout == srv.read(keys[0]) + srv.read(keys[2])
    stderr = out.stderr.decode()
    assert '"nope/missing"' in stderr and "not found" in stderr, stderr


@pytest.mark.parametrize("sized", [True, False])
def test_objects_through_python_are_boto3s(interop: Interop, sized: bool) -> None:
    srv = interop
    # The checksummed objects have their own test.
    keys = [k for k in sorted(srv.objects) if not k.startswith(("list/", "sum/"))]
    keys += [k for k in sorted(srv.objects) if k.startswith("list/")][:50]
    items: list[Any] = [(k, len(srv.objects[k])) if sized else k for k in keys]
    items.insert(3, "nope/missing")
    # The default budgets, and a small one under which the largest objects stream.
    for options in [{}, {"max_bytes": "24MiB"}]:
        client = srv.client(**options)
        seen = 0
        # Each body read as it comes: what is handed out holds the budget until then.
        for item, result in zip(items, client.get_all(BUCKET, items, errors="return")):
            seen += 1
            key = item[0] if isinstance(item, tuple) else item
            if key == "nope/missing":
                assert isinstance(result, s3_ordered.ObjectError), result
                assert result.kind == "not_found" and result.key == key, result
                continue
            assert isinstance(result, s3_ordered.Object), (key, result)
            assert result.key == key
            assert result.read() == srv.read(key), (srv.name, key, options)
        assert seen == len(items)
        stats = client.stats()
        assert stats["errors"] == 1 and stats["checksum_mismatches"] == 0, stats


def test_a_denied_request_fails_its_object_alone(interop: Interop) -> None:
    srv = interop
    good = ["sizes/02-100", f"awk/{AWKWARD[0]}"]
    if srv.name == "moto":
        # A user's policy denies GetObject under denied/ (and the wrong secret is refused:
        # moto checks signatures with its IAM authentication on).
        keys = [good[0], *srv.denied, good[1]]
        client = srv.client()
        got = list(client.get_all(BUCKET, keys, errors="return"))
        assert isinstance(got[1], s3_ordered.ObjectError)
        assert (got[1].kind, got[1].status, got[1].key) == ("access_denied", 403, keys[1])
        for i in (0, 2):
            obj = got[i]
            assert isinstance(obj, s3_ordered.Object)
            assert obj.read() == srv.read(keys[i])
        wrong = srv.client(aws_secret_access_key="not-the-secret")
        bad = next(iter(wrong.get_all(BUCKET, good[:1], errors="return")))
        assert isinstance(bad, s3_ordered.ObjectError), bad
        assert (bad.kind, bad.status, bad.code) == ("access_denied", 403, "SignatureDoesNotMatch")
        out = srv.cli("cat", f"s3://{BUCKET}", "--keys-from", "-", keys="\n".join(keys) + "\n")
        assert out.returncode == 1 and b"access denied" in out.stderr, out.stderr
        assert out.stdout == srv.read(keys[0]) + srv.read(keys[2])
    else:
        # s3rver checks no SigV4 signature and has no policies: it refuses only an access key
        # it does not know (S3 also refuses a wrong signature, SignatureDoesNotMatch).
        wrong = srv.client(aws_access_key_id="NOT-AN-ACCOUNT")
        got = list(wrong.get_all(BUCKET, good, errors="return"))
        for result in got:
            assert isinstance(result, s3_ordered.ObjectError), result
            assert (result.kind, result.status, result.code) == (
                "access_denied",
                403,
                "InvalidAccessKeyId",
            )
        assert [r.key for r in got if isinstance(r, s3_ordered.ObjectError)] == good


def test_checksums_as_the_server_states_them(interop: Interop) -> None:
    srv = interop
    if srv.name == "s3rver":
        # s3rver states no checksum (S3 states the one it keeps, with x-amz-checksum-mode):
        # every object is delivered, saying so.
        keys = [k for k in sorted(srv.objects) if k.startswith("sizes/")]
        client = srv.client()
        for obj in client.get_all(BUCKET, keys):
            assert obj.checksum_status == "no_checksum", obj.key
            assert obj.read() == srv.read(obj.key)
        out = srv.cli("cat", f"s3://{BUCKET}/sizes/", "--checksum-mode", "required")
        assert out.returncode == 1 and b"no checksum" in out.stderr, out.stderr
        return
    # moto's HEAD states a multipart upload's composite value without its -N and type (its
    # GET states both, as S3 does): read as composite, as the upload's parts show it to be.
    keys = sorted(srv.checksums)
    # The default mode, and checksums required under a budget that streams the largest.
    modes: list[dict[str, Any]] = [{}, {"checksum_mode": "required", "max_bytes": "24MiB"}]
    for options in modes:
        client = srv.client(**options)
        for sized in [True, False]:
            items: list[Any] = [(k, len(srv.objects[k])) if sized else k for k in keys]
            for obj in client.get_all(BUCKET, items):
                algorithm, status = srv.checksums[obj.key]
                data = obj.read()
                assert (obj.checksum, obj.checksum_status) == (algorithm, status), obj.key
                assert data == srv.read(obj.key), obj.key
        stats = client.stats()
        assert stats["checksum_mismatches"] == 0 and stats["errors"] == 0, stats
        assert stats["checksums_verified"] == 2 * len(keys), stats
    out = srv.cli("cat", f"s3://{BUCKET}/sum/", "--checksum-mode", "required")
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"".join(srv.read(k) for k in keys)
    assert f"checksums: {len(keys)} verified, 0 unavailable".encode() in out.stderr, out.stderr


def test_versions_and_if_match(interop: Interop) -> None:
    srv = interop
    s3 = srv.boto()
    big = next(k for k in srv.objects if k.startswith("sizes/") and len(srv.objects[k]) > MIB * 8)
    if srv.name == "s3rver":
        # s3rver ignores If-Match (S3 answers 412 Precondition Failed): a change between the
        # parts of an object is caught by their ETags alone.
        r = s3.get_object(Bucket=BUCKET, Key=big, IfMatch='"not-the-etag"', Range="bytes=0-9")
        assert r["Body"].read() == srv.objects[big][:10]
    else:
        with pytest.raises(ClientError) as refused:
            s3.get_object(Bucket=BUCKET, Key=big, IfMatch='"not-the-etag"', Range="bytes=0-9")
        assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    # An object in many parts, each after the first sent with If-Match on the first's ETag.
    obj = next(iter(srv.client().get_all(BUCKET, [big])))
    assert obj.read() == srv.read(big)
    assert obj.etag == s3.head_object(Bucket=BUCKET, Key=big)["ETag"]
    if srv.name == "s3rver":
        # s3rver keeps no versions.
        return
    items = [(key, len(data), version) for key, version, data in srv.versions]
    for obj, (key, version, data) in zip(srv.client().get_all(VERSIONED, items), srv.versions):
        assert obj.version_id == version
        assert obj.read() == data == srv.read(key, bucket=VERSIONED, VersionId=version)
    lines = "".join(f"{k}\t{n}\t{v}\n" for k, n, v in items)
    out = srv.cli("cat", f"s3://{VERSIONED}", "--keys-from", "-", keys=lines)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"".join(data for _, _, data in srv.versions)
