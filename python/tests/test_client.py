"""The Python API against a real S3 server: order, bytes, errors, memory, interrupts, fork."""

from __future__ import annotations

import _thread
import base64
import gc
import json
import multiprocessing
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import s3_ordered
from conftest import AWKWARD, BUCKET, HttpsServer, Server, put


def client(server: Server, **kw: Any) -> s3_ordered.Client:
    return s3_ordered.Client(endpoint_url=server.url, **kw)


def settle(c: s3_ordered.Client, field: str) -> int:
    """The gauge once in-flight work has unwound (bounded wait)."""
    for _ in range(200):
        gc.collect()
        if c.stats()[field] == 0:
            return 0
        time.sleep(0.01)
    return c.stats()[field]


def test_order_and_bytes_with_and_without_sizes(server: Server) -> None:
    keys = sorted(k for k in server.objects if k.startswith("obj/"))
    # Reversed, so input order is not the listing's; every other key with its size.
    keys.reverse()
    items: list[Any] = [(k, len(server.objects[k])) if i % 2 else k for i, k in enumerate(keys)]
    items[3] = (keys[3], None, None)
    c = client(server, max_connections=8)
    got = list(c.get_all(BUCKET, items))
    assert [o.key for o in got] == keys
    assert [o.seq for o in got] == list(range(len(keys)))
    for o in got:
        assert o.read() == server.objects[o.key]
        assert o.etag
        mtime = (server.root / BUCKET / o.key).stat().st_mtime
        assert o.last_modified is not None and abs(o.last_modified - int(mtime)) <= 1, o.key
    stats = c.stats()
    assert stats["objects"] == len(keys)
    assert stats["errors"] == 0


def test_hyper_transport_reads_the_same_bytes(server: Server) -> None:
    keys = sorted(k for k in server.objects if k.startswith("obj/"))
    c = client(server, max_connections=4, transport="hyper")
    got = list(c.get_all(BUCKET, keys))
    assert [o.key for o in got] == keys
    assert all(o.read() == server.objects[o.key] for o in got)
    with pytest.raises(ValueError, match="invalid transport"):
        client(server, transport="h2")


def test_awkward_keys(server: Server) -> None:
    got = list(client(server).get_all(BUCKET, AWKWARD))
    assert [o.key for o in got] == AWKWARD
    assert [o.read() for o in got] == [server.objects[k] for k in AWKWARD]


def test_missing_key_raises_at_its_position_and_iteration_goes_on(
    server: Server,
) -> None:
    it = client(server).get_all(BUCKET, ["obj/0001", "obj/missing", "obj/0002"])
    assert next(it).read() == server.objects["obj/0001"]
    with pytest.raises(s3_ordered.ObjectError) as raised:
        next(it)
    e = raised.value
    assert (e.key, e.seq, e.kind, e.status) == ("obj/missing", 1, "not_found", 404)
    assert e.code == "NoSuchKey"
    assert "obj/missing" in str(e)
    assert next(it).key == "obj/0002"
    with pytest.raises(StopIteration):
        next(it)


def test_missing_key_in_return_mode(server: Server) -> None:
    got = list(
        client(server).get_all(BUCKET, ["obj/0001", "obj/missing", "obj/0002"], errors="return")
    )
    assert isinstance(got[1], s3_ordered.ObjectError)
    assert got[1].kind == "not_found" and got[1].seq == 1
    assert [g.key for g in got] == ["obj/0001", "obj/missing", "obj/0002"]
    assert isinstance(got[2], s3_ordered.Object)


def test_wrong_credentials(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    got = list(client(server).get_all(BUCKET, ["obj/0001", "obj/0002"], errors="return"))
    assert len(got) == 2
    for e in got:
        assert isinstance(e, s3_ordered.ObjectError)
        assert e.status == 403, str(e)
        assert e.kind == "access_denied"


def test_generator_is_read_lazily(server: Server) -> None:
    pulled = 0

    def keys() -> Iterator[str]:
        nonlocal pulled
        for _ in range(50_000):
            pulled += 1
            yield "obj/0003"

    c = client(server)
    it = c.get_all(BUCKET, keys())
    assert next(it).read() == server.objects["obj/0003"]
    assert 0 < pulled < 50_000
    it.close()
    assert settle(c, "requests_in_flight") == 0


def test_with_block_closes_the_iteration(server: Server) -> None:
    c = client(server)
    keys = [f"obj/{i:04d}" for i in range(1, 40)] * 50
    with c.get_all(BUCKET, keys) as objects:
        first = next(objects)
        assert first.read() == server.objects["obj/0001"]
    # Left early: the rest were cancelled, nothing is held, and the iteration is over.
    assert settle(c, "requests_in_flight") == 0
    assert settle(c, "bytes_in_use") == 0
    with pytest.raises(StopIteration):
        next(objects)


def test_exception_from_the_generator_is_raised_at_its_position(server: Server) -> None:
    def keys() -> Iterator[str]:
        yield "obj/0001"
        yield "obj/0002"
        raise ValueError("the key source broke")

    it = client(server).get_all(BUCKET, keys())
    assert [next(it).key, next(it).key] == ["obj/0001", "obj/0002"]
    with pytest.raises(ValueError, match="the key source broke"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_bad_items_fail_alone(server: Server) -> None:
    items: list[Any] = ["obj/0001", 42, ("obj/0002", "big"), ("obj/0003",), "obj/0004"]
    got = list(client(server).get_all(BUCKET, items, errors="return"))
    assert [type(g).__name__ for g in got] == [
        "Object",
        "ObjectError",
        "ObjectError",
        "ObjectError",
        "Object",
    ]
    bad, last = got[1], got[4]
    assert isinstance(bad, s3_ordered.ObjectError) and isinstance(last, s3_ordered.Object)
    assert bad.kind == "invalid_request" and "int" in str(bad)
    assert last.read() == server.objects["obj/0004"]


def test_list_feeds_get_all(server: Server) -> None:
    c = client(server)
    listed = list(c.list(BUCKET, "obj/"))
    expected = sorted(k for k in server.objects if k.startswith("obj/"))
    assert [k for k, _ in listed] == expected
    assert all(size == len(server.objects[k]) for k, size in listed)
    got = [(o.key, o.read()) for o in c.get_all(BUCKET, listed)]
    assert got == [(k, server.objects[k]) for k in expected]
    with pytest.raises(s3_ordered.ObjectError):
        list(c.list("no-such-bucket", ""))


def test_memory_returns_when_bodies_and_views_are_released(server: Server) -> None:
    c = client(server, max_bytes="8MiB")
    keys = [f"obj/{i:04d}" for i in range(1, 20)]
    held = list(c.get_all(BUCKET, keys))
    assert c.stats()["bytes_in_use"] > 0
    first = held[0]
    views = list(first.body)
    assert b"".join(bytes(v) for v in views) == server.objects[first.key]
    assert all(v.readonly for v in views)
    del held, first
    assert c.stats()["bytes_in_use"] > 0  # the views still hold their chunk
    del views
    assert settle(c, "bytes_in_use") == 0


def test_read_returns_memory_at_once(server: Server) -> None:
    c = client(server)
    objs = list(c.get_all(BUCKET, ["obj/0010", "obj/0011"]))
    for o in objs:
        assert o.read() == server.objects[o.key]
        assert o.read() == b""
    assert c.stats()["bytes_in_use"] == 0


def test_large_object_streams_within_the_budget(server: Server) -> None:
    c = client(server, max_bytes="1MiB", max_connections=4)
    # A streaming body is read before the next object is asked for (the consumer rule).
    it = c.get_all(BUCKET, ["big/three-mib", "obj/0001"])
    obj = next(it)
    assert obj.body.streaming
    assert len(obj.body) == 3 << 20
    received = bytearray()
    for view in obj.body:
        received += view
        assert c.stats()["bytes_in_use"] <= 1 << 20
        del view
    assert bytes(received) == server.objects["big/three-mib"]
    assert next(it).read() == server.objects["obj/0001"]
    again = next(c.get_all(BUCKET, [("big/three-mib", 3 << 20)]))
    assert again.read() == server.objects["big/three-mib"]


def test_bad_configuration_is_a_value_error_naming_the_field() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        s3_ordered.Client(max_bytes="12XB")
    with pytest.raises(ValueError, match="max_connections"):
        s3_ordered.Client(max_connections=0)
    with pytest.raises(ValueError, match="profile"):
        s3_ordered.Client(profile="no-such-profile")
    with pytest.raises(ValueError, match="endpoint"):
        s3_ordered.Client(endpoint_url="not a url")
    with pytest.raises(ValueError, match="ca_bundle"):
        s3_ordered.Client(ca_bundle="/nonexistent/ca.pem")
    with pytest.raises(ValueError, match="errors"):
        s3_ordered.Client(anonymous=True).get_all(BUCKET, [], errors="ignore")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="min_body_rate"):
        s3_ordered.Client(anonymous=True, min_body_rate="fast")
    with pytest.raises(ValueError, match="min_body_rate.window"):
        s3_ordered.Client(anonymous=True, body_rate_window=0.01)
    with pytest.raises(ValueError, match="body_rate_window"):
        s3_ordered.Client(anonymous=True, body_rate_window=-1.0)
    # Off, the window is not checked.
    s3_ordered.Client(anonymous=True, min_body_rate=0, body_rate_window=0.01)


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    t.join()
    for s in held:
        s.close()
    listener.close()


def test_ctrl_c_stops_a_blocked_iteration_and_cancels(silent_endpoint: str) -> None:
    c = s3_ordered.Client(endpoint_url=silent_endpoint, max_connections=4)
    it = c.get_all(BUCKET, [f"k{i}" for i in range(10)])
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        next(it)
    waited = time.monotonic() - started
    timer.join()
    # The server never answers: only the interrupt can have ended the wait (stall timeout: 30 s).
    assert waited < 10
    assert settle(c, "requests_in_flight") == 0
    assert settle(c, "busy_connections") == 0
    with pytest.raises(StopIteration):
        next(it)


def _in_forked_child(url: str, inherited: s3_ordered.Client, out: Any) -> None:
    try:
        list(inherited.get_all(BUCKET, ["obj/0001"]))
        out.put("inherited client worked")
    except RuntimeError as e:
        out.put(f"refused: {e}")
    fresh = s3_ordered.Client(endpoint_url=url)
    out.put(fresh.get_all(BUCKET, ["obj/0001"]).__next__().read())


def test_fork_child_makes_its_own_client(server: Server) -> None:
    parent = client(server)
    assert next(parent.get_all(BUCKET, ["obj/0001"])).read() == server.objects["obj/0001"]
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    p = ctx.Process(target=_in_forked_child, args=(server.url, parent, out))
    p.start()
    first, second = out.get(timeout=60), out.get(timeout=60)
    p.join(timeout=60)
    assert p.exitcode == 0
    assert first.startswith("refused: ") and "fork" in first
    assert second == server.objects["obj/0001"]
    # The parent's client still works.
    assert next(parent.get_all(BUCKET, ["obj/0002"])).read() == server.objects["obj/0002"]


def test_https_with_a_private_ca(
    https_server: HttpsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = ["obj/0001", "obj/0002"]
    expected = [https_server.objects[k] for k in keys]
    by_arg = s3_ordered.Client(endpoint_url=https_server.url, ca_bundle=str(https_server.ca))
    assert [o.read() for o in by_arg.get_all(BUCKET, keys)] == expected

    # Without the CA: a TLS error at each object, not retried, saying how to fix it.
    untrusted = s3_ordered.Client(endpoint_url=https_server.url)
    errors = list(untrusted.get_all(BUCKET, keys, errors="return"))
    for e in errors:
        assert isinstance(e, s3_ordered.ObjectError)
        assert e.kind == "tls" and e.attempts == 1, str(e)
        assert "unknown issuer" in str(e) and "AWS_CA_BUNDLE" in str(e)

    monkeypatch.setenv("AWS_CA_BUNDLE", str(https_server.ca))
    by_env = s3_ordered.Client(endpoint_url=https_server.url)
    assert [o.read() for o in by_env.get_all(BUCKET, keys)] == expected


def put_with_crc32(root: Path, key: str, data: bytes, stated: bytes | None = None) -> None:
    """Stores ``data`` under ``key`` with the CRC32 of ``stated`` (default: of ``data``), as
    ``s3-ordered serve`` (s3s-fs) keeps a checksum given at upload: in its internal-info file
    beside the bucket. The value is computed here by zlib, independently of the library."""
    put(root, key, data)

    def enc(s: str) -> str:
        return base64.urlsafe_b64encode(s.encode()).rstrip(b"=").decode()

    crc = zlib.crc32(data if stated is None else stated).to_bytes(4, "big")
    info = {"checksum_crc32": base64.b64encode(crc).decode()}
    (root / f".bucket-{enc(BUCKET)}.object-{enc(key)}.internal.json").write_text(json.dumps(info))


def test_checksums_are_verified_by_default_and_each_object_says_how(server: Server) -> None:
    good, plain = b"verified bytes" * 100, b"no checksum stored"
    put_with_crc32(server.root, "ck/good", good)
    put_with_crc32(server.root, "ck/bad", good, stated=b"other bytes")
    put(server.root, "ck/plain", plain)
    keys = ["ck/good", "ck/bad", "ck/plain"]

    c = client(server)
    got = list(c.get_all(BUCKET, keys, errors="return"))
    ok = got[0]
    assert isinstance(ok, s3_ordered.Object)
    assert (ok.checksum, ok.checksum_status, ok.read()) == ("CRC32", "verified", good)
    bad = got[1]
    assert isinstance(bad, s3_ordered.ObjectError)
    assert bad.kind == "checksum_mismatch" and "CRC32" in str(bad)
    unchecked = got[2]
    assert isinstance(unchecked, s3_ordered.Object)
    assert (unchecked.checksum, unchecked.checksum_status) == (None, "no_checksum")
    stats = c.stats()
    # The mismatch was sent again once on a new connection before it failed.
    assert (stats["checksums_verified"], stats["checksums_unavailable"]) == (1, 1)
    assert stats["checksum_mismatches"] == 2

    off = list(client(server, checksum_mode="off").get_all(BUCKET, keys))
    assert [o.checksum_status for o in off] == ["off"] * 3
    assert off[1].read() == good

    strict = list(client(server, checksum_mode="required").get_all(BUCKET, keys, errors="return"))
    assert isinstance(strict[0], s3_ordered.Object)
    assert [getattr(e, "kind", None) for e in strict[1:]] == [
        "checksum_mismatch",
        "checksum_missing",
    ]
    with pytest.raises(ValueError, match="invalid checksum_mode"):
        client(server, checksum_mode="sometimes")


def test_hedging_is_on_by_default_and_can_be_turned_off(server: Server) -> None:
    # A server that answers at once: a GET is sent twice only if its head is late, which a
    # loaded machine can make happen with hedging on, and never with it off.
    for i in range(100):
        put(server.root, f"hg/{i:03}", b"x" * i)
    keys = [f"hg/{i:03}" for i in range(100)]
    for kw in ({}, {"hedge": False}):
        c = client(server, **kw)
        got = [o.read() for o in c.get_all(BUCKET, keys)]
        assert got == [b"x" * i for i in range(100)]
        stats = c.stats()
        assert stats["hedges_won"] <= stats["hedges_sent"], stats
        if kw:
            assert (stats["hedges_sent"], stats["hedges_won"]) == (0, 0)
        assert stats["slow_bodies_resumed"] == 0
        assert stats["requests"] == 100 + stats["hedges_sent"]


def test_ray_reader_is_reachable_without_importing_ray_eagerly() -> None:
    # As the README writes it: ``import s3_ordered`` then ``s3_ordered.ray.read_objects``.
    code = (
        "import sys, s3_ordered\n"
        "assert 's3_ordered.ray' not in sys.modules\n"
        "assert callable(s3_ordered.ray.read_objects)\n"
        "assert 'ray' not in sys.modules, 'ray was imported eagerly'\n"
        "try:\n"
        "    s3_ordered.nothing_here\n"
        "except AttributeError as e:\n"
        "    assert 'nothing_here' in str(e)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_consumer_that_holds_the_budget_is_told_so_after_the_grace(server: Server) -> None:
    c = client(server, max_bytes="1MiB", max_connections=4)
    keys = [f"obj/{i:04d}" for i in range(60)]
    started = time.monotonic()
    with pytest.raises(s3_ordered.MemoryHeldError, match="max_bytes=1048576"):
        list(c.get_all(BUCKET, keys, held_memory_timeout=0.5))
    assert 0.5 <= time.monotonic() - started < 10
    assert settle(c, "delivered_bytes_in_use") == 0
    # The iteration is not closed: released bodies let it go on.
    it = c.get_all(BUCKET, keys, held_memory_timeout=0.3)
    held = []
    with pytest.raises(s3_ordered.MemoryHeldError) as raised:
        while True:
            held.append(next(it))
    assert "read each object's body" in str(raised.value).lower()
    assert c.stats()["delivered_bytes_in_use"] > 0
    n = len(held)
    assert 0 < n < len(keys)
    del held
    gc.collect()
    assert [o.read() == server.objects[o.key] for o in it] == [True] * (len(keys) - n)


def test_a_consumer_that_reads_as_it_goes_is_never_told(server: Server) -> None:
    c = client(server, max_bytes="1MiB", max_connections=4)
    keys = [f"obj/{i:04d}" for i in range(60)] * 3
    # No grace at all: any wait on memory the consumer held would raise.
    got = [o.read() for o in c.get_all(BUCKET, keys, held_memory_timeout=0.0)]
    assert got == [server.objects[k] for k in keys]
    with pytest.raises(ValueError, match="held_memory_timeout"):
        c.get_all(BUCKET, keys, held_memory_timeout=-1.0)
