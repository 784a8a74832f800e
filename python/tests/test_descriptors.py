"""The package under a low file descriptor limit, in a child interpreter that sets it: a low
soft limit is raised for the client's connections; a low hard limit caps them, and every
object still comes right, no attempt spent on it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

from conftest import ACCESS_KEY, BUCKET, SECRET_KEY, Server

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    soft, hard = (int(x) for x in sys.argv[2:4])
    _, old_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard if hard > 0 else old_hard))
    import s3_ordered
    c = s3_ordered.Client(
        endpoint_url=sys.argv[1], max_connections=300,
        aws_access_key_id=sys.argv[4], aws_secret_access_key=sys.argv[5],
    )
    raised = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    keys = [k for k, _ in c.list(sys.argv[6], "obj/")]
    bodies = {o.key: o.read() for o in c.get_all(sys.argv[6], keys * 5)}
    print(json.dumps({"soft": raised, "keys": len(keys), "stats": c.stats(),
                      "sizes": {k: len(v) for k, v in bodies.items()}}))
    """
)


def run(server: Server, soft: int, hard: int) -> dict[str, Any]:
    args = [server.url, str(soft), str(hard), ACCESS_KEY, SECRET_KEY, BUCKET]
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_a_low_hard_limit_caps_connections_and_loses_nothing(server: Server) -> None:
    r = run(server, 40, 40)
    keys = [k for k in server.objects if k.startswith("obj/")]
    assert r["keys"] == len(keys)
    assert r["sizes"] == {k: len(server.objects[k]) for k in keys}
    stats = r["stats"]
    assert stats["errors"] == 0
    assert stats["retries"] == 0
    assert 1 <= stats["connection_limit"] < 40


def test_a_low_soft_limit_is_raised_for_the_connections(server: Server) -> None:
    r = run(server, 40, 0)
    assert r["soft"] >= 300
    assert r["stats"]["connection_limit"] == 300
    assert r["stats"]["errors"] == 0
