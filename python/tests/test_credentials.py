"""Where credentials come from in Python: the AWS default chain (here a ``credential_process``
profile; the other sources are tested from Rust against loopback stand-ins), explicit keys, and
a ``credential_provider`` callable refreshed before its credentials expire. The metadata
service is turned off for every test (``conftest.aws_env``)."""

from __future__ import annotations

import datetime
import http.server
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import s3_ordered
from conftest import ACCESS_KEY, BUCKET, SECRET_KEY, Server

KEYS = [f"obj/{i:04d}" for i in range(20)]


def fetch(c: s3_ordered.Client, server: Server) -> None:
    got = [(o.key, o.read()) for o in c.get_all(BUCKET, KEYS)]
    assert got == [(k, server.objects[k]) for k in KEYS]


def no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


class _RoleHandler(http.server.BaseHTTPRequestHandler):
    """Serves role credentials as AWS compute does: IMDSv2 (a session token first, GETs
    without it refused) and a container-credentials endpoint (with its authorization token)."""

    log: list[str] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _credentials(self, source: str) -> str:
        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        return json.dumps(
            {
                "Code": "Success",
                "AccessKeyId": ACCESS_KEY,
                "SecretAccessKey": SECRET_KEY,
                "Token": f"token-from-{source}",
                "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )

    def do_PUT(self) -> None:
        if self.path == "/latest/api/token" and self.headers.get(
            "x-aws-ec2-metadata-token-ttl-seconds"
        ):
            self.log.append("imds token")
            self._reply(200, "py-imds-token", {"x-aws-ec2-metadata-token-ttl-seconds": "21600"})
        else:
            self._reply(400, "")

    def do_GET(self) -> None:
        if self.path.startswith("/latest/"):
            if self.headers.get("x-aws-ec2-metadata-token") != "py-imds-token":
                self.log.append("imds refused")
                self._reply(401, "")
            elif self.path == "/latest/meta-data/iam/security-credentials/":
                self._reply(200, "py-role")
            elif self.path == "/latest/meta-data/iam/security-credentials/py-role":
                self.log.append("imds credentials")
                self._reply(200, self._credentials("imds"))
            elif self.path == "/latest/meta-data/placement/region":
                self._reply(200, "eu-south-1")
            else:
                self._reply(404, "")
        elif self.path == "/container" and self.headers.get("Authorization") == "py-auth":
            self.log.append("container credentials")
            self._reply(200, self._credentials("container"))
        else:
            self._reply(401, "")


@pytest.fixture
def role_server() -> Iterator[str]:
    """The stand-in on 127.0.0.1, for one test."""
    _RoleHandler.log = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RoleHandler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    t.join()


def test_an_instance_role_through_imdsv2(
    server: Server, role_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_env_keys(monkeypatch)
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", role_server)
    fetch(s3_ordered.Client(endpoint_url=server.url), server)
    assert "imds token" in _RoleHandler.log
    assert "imds credentials" in _RoleHandler.log
    assert "imds refused" not in _RoleHandler.log


def test_container_credentials(
    server: Server, role_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_env_keys(monkeypatch)
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{role_server}/container")
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "py-auth")
    fetch(s3_ordered.Client(endpoint_url=server.url), server)
    assert _RoleHandler.log == ["container credentials"]


def test_no_credentials_anywhere_names_every_way(monkeypatch: pytest.MonkeyPatch) -> None:
    no_env_keys(monkeypatch)
    with pytest.raises(ValueError) as err:
        s3_ordered.Client(endpoint_url="http://127.0.0.1:9")
    for way in ("AWS_ACCESS_KEY_ID", "credential_process", "AWS_WEB_IDENTITY_TOKEN_FILE", "IMDS"):
        assert way in str(err.value)


def test_the_chain_runs_a_credential_process(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    no_env_keys(monkeypatch)
    script = tmp_path / "creds.py"
    script.write_text(
        "import json\n"
        f"print(json.dumps({{'Version': 1, 'AccessKeyId': {ACCESS_KEY!r}, "
        f"'SecretAccessKey': {SECRET_KEY!r}}}))\n"
    )
    config = tmp_path / "config"
    config.write_text(
        f"[profile pipeline]\ncredential_process = {sys.executable} {script}\nregion = eu-west-2\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    fetch(s3_ordered.Client(endpoint_url=server.url, profile="pipeline"), server)
    # A process that fails is a ValueError with its message.
    config.write_text(f"[profile broken]\ncredential_process = {sys.executable} -c 'exit(3)'\n")
    with pytest.raises(ValueError, match="credentials"):
        s3_ordered.Client(endpoint_url=server.url, profile="broken")


def test_explicit_keys_win_over_the_environment(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    c = s3_ordered.Client(
        endpoint_url=server.url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    fetch(c, server)
    wrong = s3_ordered.Client(
        endpoint_url=server.url, aws_access_key_id=ACCESS_KEY, aws_secret_access_key="wrong"
    )
    (e,) = list(wrong.get_all(BUCKET, KEYS[:1], errors="return"))
    assert isinstance(e, s3_ordered.ObjectError)
    assert e.kind == "access_denied"


def test_a_credential_provider_is_asked_again_before_expiry(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_env_keys(monkeypatch)
    calls: list[float] = []
    threads: set[int] = set()

    def provider() -> s3_ordered.CredentialDict:
        calls.append(time.monotonic())
        threads.add(threading.get_ident())
        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
        return {
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "token": None,
            "expires_at": expires,
        }

    c = s3_ordered.Client(endpoint_url=server.url, credential_provider=provider)
    start = time.monotonic()
    rounds = 0
    while time.monotonic() - start < 3.2 and rounds < 10_000:
        fetch(c, server)
        rounds += 1
    # Two-second credentials, refreshed a quarter of their life early: every 1.5 s.
    assert 2 <= len(calls) <= 4, calls
    assert threading.get_ident() not in threads, "called off the consumer's thread"
    assert c.stats()["errors"] == 0


def test_a_failing_provider_fails_the_objects_with_its_message(server: Server) -> None:
    def provider() -> s3_ordered.CredentialDict:
        raise RuntimeError("vault is sealed")

    c = s3_ordered.Client(endpoint_url=server.url, credential_provider=provider)
    got = list(c.get_all(BUCKET, KEYS[:2], errors="return"))
    assert len(got) == 2
    for e in got:
        assert isinstance(e, s3_ordered.ObjectError)
        assert e.kind == "credentials"
        assert "vault is sealed" in str(e)


def test_credential_options_are_checked(server: Server) -> None:
    with pytest.raises(ValueError, match="together"):
        s3_ordered.Client(aws_access_key_id=ACCESS_KEY)
    with pytest.raises(ValueError, match="at most one"):
        s3_ordered.Client(
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            credential_provider=lambda: {"access_key_id": "a", "secret_access_key": "b"},
        )
    with pytest.raises(ValueError, match="callable"):
        s3_ordered.Client(credential_provider="not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="request_payer"):
        s3_ordered.Client(request_payer="me")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected_bucket_owner"):
        s3_ordered.Client(expected_bucket_owner="me")
    with pytest.raises(ValueError, match="sse_customer_key"):
        s3_ordered.Client(sse_customer_key=b"short")


def test_request_options_are_sent_signed(server: Server) -> None:
    # The server checks the signature over every field sent.
    c = s3_ordered.Client(
        endpoint_url=server.url, request_payer="requester", expected_bucket_owner="123456789012"
    )
    fetch(c, server)
