"""The Ray Data reader on a local cluster: sharded reads keep the global order."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest

from conftest import ACCESS_KEY, BUCKET, SECRET_KEY, Server

ray = pytest.importorskip("ray")
s3_ray = pytest.importorskip("s3_ordered.ray")


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                # The workers' credential chain must never reach the metadata service.
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        },
    )
    yield
    ray.shutdown()


def test_read_objects_on_four_shards_keeps_the_input_order(server: Server, cluster: None) -> None:
    keys = sorted(k for k in server.objects if k.startswith("obj/"))
    # Not the listing's order, and the first shard much slower than the others (large
    # objects), so that its rows would come last if Ray did not keep the order.
    keys = ["big/three-mib"] * 30 + keys[1::2] + keys[0::2]
    items = [(k, len(server.objects[k])) for k in keys]
    ds = s3_ray.read_objects(BUCKET, items, shards=4, client_options={"endpoint_url": server.url})
    rows = ds.take_all()
    assert [r["key"] for r in rows] == keys
    assert [r["seq"] for r in rows] == list(range(len(keys)))
    assert all(r["body"] == server.objects[r["key"]] for r in rows)


def test_read_prefix(server: Server, cluster: None) -> None:
    ds = s3_ray.read_prefix(BUCKET, "obj/", shards=3, client_options={"endpoint_url": server.url})
    keys = sorted(k for k in server.objects if k.startswith("obj/"))
    rows = ds.take_all()
    assert [r["key"] for r in rows] == keys
    assert all(r["body"] == server.objects[r["key"]] for r in rows)


def test_a_missing_key_fails_the_read(server: Server, cluster: None) -> None:
    ds = s3_ray.read_objects(
        BUCKET,
        ["obj/0001", "obj/missing"],
        shards=1,
        client_options={"endpoint_url": server.url},
    )
    with pytest.raises(Exception, match="obj/missing"):
        ds.take_all()


def test_credentials_in_client_options_reach_the_workers(server: Server, cluster: None) -> None:
    keys = ["obj/0001", "obj/0002", "obj/0003"]
    # The workers' environment has the right keys: wrong ones given here must be the ones used.
    wrong = {"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": "wrong"}
    ds = s3_ray.read_objects(
        BUCKET, keys, shards=1, client_options={"endpoint_url": server.url, **wrong}
    )
    with pytest.raises(Exception, match="access_denied|403"):
        ds.take_all()
    # A provider is pickled to the workers (a partial of a builtin pickles anywhere).
    provider: functools.partial[dict[str, str]] = functools.partial(
        dict, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY
    )
    options = {"endpoint_url": server.url, "credential_provider": provider}
    rows = s3_ray.read_objects(BUCKET, keys, shards=2, client_options=options).take_all()
    assert [r["key"] for r in rows] == keys
    bad: functools.partial[dict[str, str]] = functools.partial(
        dict, access_key_id=ACCESS_KEY, secret_access_key="wrong"
    )
    options = {"endpoint_url": server.url, "credential_provider": bad}
    with pytest.raises(Exception, match="access_denied|403"):
        s3_ray.read_objects(BUCKET, keys, shards=1, client_options=options).take_all()
