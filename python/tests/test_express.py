"""A directory bucket (S3 Express One Zone) from Python, with no option beyond an ordinary
bucket's: sessions made, reused and replaced; listings in the server's order; the CLI too."""

from __future__ import annotations

import subprocess

import pytest
from express_standin import BUCKET, serving

import s3_ordered
from conftest import ACCESS_KEY, SECRET_KEY, _binary, content

OBJECTS = {f"e/{i:03d}": content(i, 100 + i * 997) for i in range(40)}
OBJECTS["big/two-mib"] = content(99, 2 << 20)


def test_objects_of_a_directory_bucket_come_in_order_over_one_session() -> None:
    with serving(ACCESS_KEY, SECRET_KEY, OBJECTS) as (url, state):
        c = s3_ordered.Client(endpoint_url=url, max_connections=8)
        keys = list(reversed(OBJECTS))
        got = list(c.get_all(BUCKET, [(k, len(OBJECTS[k])) for k in keys]))
        assert [o.key for o in got] == keys
        for o in got:
            assert o.read() == OBJECTS[o.key]
        listed = [k for k, _ in c.list(BUCKET, "e/")]
        assert listed == sorted((k for k in OBJECTS if k.startswith("e/")), reverse=True)
        assert state.bad == []
        assert state.created == 1
        assert c.stats()["sessions_created"] == 1

        # The server drops the session: the requests refused are sent again with a new one.
        state.drop_sessions()
        again = list(c.get_all(BUCKET, [(k, len(OBJECTS[k])) for k in keys]))
        assert [o.read() for o in again] == [OBJECTS[k] for k in keys]
        assert state.refusals >= 1
        assert state.created == 2
        assert c.stats()["errors"] == 0
        assert state.bad == []


def test_without_sessions_requests_are_refused_by_a_server_that_wants_them() -> None:
    with serving(ACCESS_KEY, SECRET_KEY, OBJECTS) as (url, state):
        c = s3_ordered.Client(endpoint_url=url, s3_express_sessions=False)
        with pytest.raises(s3_ordered.ObjectError) as e:
            next(iter(c.get_all(BUCKET, ["e/001"])))
        assert e.value.kind == "access_denied"
        assert state.created == 0
        assert state.bad and "no session" in state.bad[0]


def test_the_cli_reads_a_directory_bucket() -> None:
    with serving(ACCESS_KEY, SECRET_KEY, OBJECTS) as (url, state):
        out = subprocess.run(
            [_binary(), "cat", f"s3://{BUCKET}/e/", "--endpoint-url", url, "-q"],
            capture_output=True,
            check=False,
        )
        assert out.returncode == 0, out.stderr.decode()
        keys = sorted((k for k in OBJECTS if k.startswith("e/")), reverse=True)
        assert out.stdout == b"".join(OBJECTS[k] for k in keys)
        assert state.bad == [] and state.created == 1
