"""The PyTorch datasets through real ``DataLoader``s against a real S3 server: the order for any
workers and batch size, ranks, epochs, resuming (no GET for what was already seen), errors,
start methods, and the map-style dataset's concurrent batches."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable
from typing import Any

import pytest

from conftest import BUCKET, Recorder, Server, content, put

torch = pytest.importorskip("torch")
s3_torch = pytest.importorskip("s3_ordered.torch")
stateful = pytest.importorskip("torchdata.stateful_dataloader")

from torch.utils.data import (  # noqa: E402
    DataLoader,
    DistributedSampler,
    RandomSampler,
)

import s3_ordered  # noqa: E402

COUNT = 100

# Three workers on a two-core machine: torch's advice against it is not this test's concern.
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")
PREFIX = "torch/"


@pytest.fixture(scope="module")
def samples(server: Server) -> list[str]:
    """``COUNT`` small objects under ``PREFIX``, their keys in list order."""
    keys = []
    for i in range(COUNT):
        key = f"{PREFIX}{i:04d}"
        data = content(1000 + i, 1 + (i * 37) % 300)
        put(server.root, key, data)
        server.objects[key] = data
        keys.append(key)
    return keys


def options(url: str, **kw: Any) -> dict[str, Any]:
    return {"endpoint_url": url, "max_connections": 8, **kw}


def flatten(batches: Iterable[Any]) -> list[dict[str, Any]]:
    """The samples a loader yielded, in order, whether batched (a dict of lists) or not."""
    out = []
    for b in batches:
        if isinstance(b["key"], str):
            out.append(b)
            continue
        seqs = b["seq"].tolist() if hasattr(b["seq"], "tolist") else list(b["seq"])
        for k, s, body in zip(b["key"], seqs, b["body"]):
            out.append({"key": k, "seq": s, "body": body})
    return out


def permutation(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    order: list[int] = torch.randperm(n, generator=g).tolist()
    return order


def check_bytes(server: Server, got: list[dict[str, Any]]) -> None:
    for s in got:
        assert s["body"] == server.objects[s["key"]], s["key"]


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("batch_size", [None, 1, 7, 32])
@pytest.mark.parametrize("num_workers", [0, 1, 2, 3])
def test_the_loader_yields_the_epoch_order_for_any_workers_and_batch_size(
    server: Server, samples: list[str], num_workers: int, batch_size: int | None, shuffle: bool
) -> None:
    ds = s3_torch.OrderedDataset(
        BUCKET,
        samples,
        client_options=options(server.url),
        batch_size=batch_size,
        shuffle=shuffle,
        seed=7,
    )
    loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers)
    got = flatten(loader)
    order = permutation(COUNT, 7, 0) if shuffle else list(range(COUNT))
    assert [s["seq"] for s in got] == order
    assert [s["key"] for s in got] == [samples[i] for i in order]
    check_bytes(server, got)
    assert len(ds) == COUNT


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("world", [2, 3])
def test_ranks_take_distributed_samplers_shares_and_interleave_to_the_epoch_order(
    server: Server, samples: list[str], world: int, drop_last: bool
) -> None:
    keys = samples[: COUNT - 1]  # 99: uneven over 2 ranks, even over 3
    n = len(keys)
    shares = []
    for rank in range(world):
        ds = s3_torch.OrderedDataset(
            BUCKET,
            keys,
            client_options=options(server.url),
            batch_size=7,
            shuffle=True,
            seed=3,
            rank=rank,
            world_size=world,
            drop_last=drop_last,
        )
        got = flatten(DataLoader(ds, batch_size=7, num_workers=2))
        check_bytes(server, got)
        sampler: DistributedSampler[int] = DistributedSampler(
            keys,  # type: ignore[arg-type]  # any sized sequence will do
            num_replicas=world,
            rank=rank,
            shuffle=True,
            seed=3,
            drop_last=drop_last,
        )
        assert [s["seq"] for s in got] == list(sampler)
        assert len(got) == len(ds) == len(sampler)
        shares.append([s["seq"] for s in got])
    assert len({len(s) for s in shares}) == 1, "every rank yields as many samples"
    interleaved = [i for group in zip(*shares) for i in group]
    order = permutation(n, 3, 0)
    if drop_last:
        assert interleaved == order[: len(interleaved)]
        assert len(set(interleaved)) == len(interleaved), "disjoint"
    else:
        assert interleaved[:n] == order, "complete, in the epoch order"
        assert interleaved[n:] == order[: len(interleaved) - n], "padded from the start"


def test_set_epoch_reshuffles_and_reaches_persistent_workers(
    server: Server, samples: list[str]
) -> None:
    ds = s3_torch.OrderedDataset(
        BUCKET, samples, client_options=options(server.url), batch_size=5, shuffle=True, seed=11
    )
    loader = DataLoader(ds, batch_size=5, num_workers=2, persistent_workers=True)
    epochs = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        epochs.append([s["seq"] for s in flatten(loader)])
    for epoch, got in enumerate(epochs):
        assert got == permutation(COUNT, 11, epoch), epoch
    assert epochs[0] != epochs[1]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_start_skips_the_first_samples_without_fetching_them(
    server: Server, samples: list[str], recorder: Recorder, num_workers: int
) -> None:
    start = 37
    ds = s3_torch.OrderedDataset(
        BUCKET,
        samples,
        client_options=options(recorder.url),
        batch_size=4,
        shuffle=True,
        seed=5,
        start=start,
    )
    got = flatten(DataLoader(ds, batch_size=4, num_workers=num_workers))
    order = permutation(COUNT, 5, 0)
    assert [s["seq"] for s in got] == order[start:]
    check_bytes(server, got)
    skipped = {samples[i] for i in order[:start]}
    assert recorder.gets, "the proxy saw the GETs"
    assert not skipped & set(recorder.gets)
    # Another epoch begins at its first sample.
    ds.set_epoch(1)
    assert [s["seq"] for s in flatten(DataLoader(ds, batch_size=4))] == permutation(COUNT, 5, 1)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_stateful_loader_restored_in_a_new_loader_goes_on_exactly(
    server: Server, samples: list[str], recorder: Recorder, num_workers: int
) -> None:
    def dataset() -> Any:
        return s3_torch.OrderedDataset(
            BUCKET,
            samples,
            client_options=options(recorder.url),
            batch_size=6,
            shuffle=True,
            seed=2,
        )

    order = permutation(COUNT, 2, 0)
    loader = stateful.StatefulDataLoader(dataset(), batch_size=6, num_workers=num_workers)
    seen: list[dict[str, Any]] = []
    it = iter(loader)
    for _ in range(7):
        seen.extend(flatten([next(it)]))
    state = pickle.loads(pickle.dumps(loader.state_dict()))
    del it, loader
    assert [s["seq"] for s in seen] == order[:42]

    recorder.reset()
    restored = stateful.StatefulDataLoader(dataset(), batch_size=6, num_workers=num_workers)
    restored.load_state_dict(state)
    rest = flatten(restored)
    assert [s["seq"] for s in rest] == order[42:]
    check_bytes(server, rest)
    before = {samples[i] for i in order[:42]}
    assert recorder.gets, "the proxy saw the GETs"
    assert not before & set(recorder.gets), "no GET for a sample seen before the checkpoint"


def worker_pid(obj: s3_ordered.Object) -> tuple[int, str, int]:
    return os.getpid(), obj.key, len(obj.read())


def test_transform_runs_in_the_workers(server: Server, samples: list[str]) -> None:
    ds = s3_torch.OrderedDataset(
        BUCKET, samples, client_options=options(server.url), transform=worker_pid
    )
    got = list(DataLoader(ds, batch_size=None, num_workers=2))
    assert [key for _, key, _ in got] == samples
    assert [size for _, _, size in got] == [len(server.objects[k]) for k in samples]
    pids = {pid for pid, _, _ in got}
    assert len(pids) == 2 and os.getpid() not in pids


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_missing_key_raises_object_error_through_the_loader(
    server: Server, samples: list[str], num_workers: int
) -> None:
    keys = samples[:10] + [f"{PREFIX}missing"] + samples[10:20]
    ds = s3_torch.OrderedDataset(BUCKET, keys, client_options=options(server.url))
    got = []
    with pytest.raises(s3_ordered.ObjectError) as caught:
        for sample in DataLoader(ds, batch_size=None, num_workers=num_workers):
            got.append(sample["key"])
    e = caught.value
    assert isinstance(e, s3_torch.SampleError)
    assert (e.key, e.seq, e.kind, e.status) == (f"{PREFIX}missing", 10, "not_found", 404)
    assert f"{PREFIX}missing" in str(e)
    # The loader delivers in order: everything before the failure, then the error.
    assert got == keys[:10]


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_each_start_method(server: Server, samples: list[str], method: str) -> None:
    ds = s3_torch.OrderedDataset(
        BUCKET, samples, client_options=options(server.url), batch_size=8, shuffle=True, seed=1
    )
    loader = DataLoader(ds, batch_size=8, num_workers=2, multiprocessing_context=method)
    got = flatten(loader)
    assert [s["seq"] for s in got] == permutation(COUNT, 1, 0)
    check_bytes(server, got)


def test_from_prefix_lists_once(server: Server, samples: list[str]) -> None:
    ds = s3_torch.OrderedDataset.from_prefix(
        BUCKET, PREFIX, client_options=options(server.url), batch_size=3
    )
    got = flatten(DataLoader(ds, batch_size=3, num_workers=2))
    assert [s["key"] for s in got] == samples
    check_bytes(server, got)


def test_map_dataset_with_samplers(server: Server, samples: list[str]) -> None:
    ds = s3_torch.MapDataset(BUCKET, samples, client_options=options(server.url))
    assert len(ds) == COUNT
    assert ds[5]["body"] == server.objects[samples[5]]
    assert ds[-1]["key"] == samples[-1]
    with pytest.raises(IndexError):
        ds[COUNT]
    g = torch.Generator()
    g.manual_seed(9)
    sampler = RandomSampler(ds, generator=g)
    g.manual_seed(9)
    expected = list(RandomSampler(range(COUNT), generator=g))
    g.manual_seed(9)
    got = flatten(DataLoader(ds, batch_size=8, sampler=sampler, num_workers=2))
    assert [s["seq"] for s in got] == expected
    assert [s["key"] for s in got] == [samples[i] for i in expected]
    check_bytes(server, got)
    for rank in range(2):
        dist: DistributedSampler[int] = DistributedSampler(
            ds, num_replicas=2, rank=rank, shuffle=True, seed=4
        )
        got = flatten(DataLoader(ds, batch_size=8, sampler=dist, num_workers=2))
        assert [s["seq"] for s in got] == list(dist)
        check_bytes(server, got)


def test_map_dataset_puts_a_whole_batch_in_flight(
    server: Server, samples: list[str], recorder: Recorder
) -> None:
    ds = s3_torch.MapDataset(
        BUCKET, samples, client_options=options(recorder.url, max_connections=16, hedge=False)
    )
    batch = [3, 50, 7, 99, 1, 20, 64, 12]
    # Each GET is held until all eight are in flight together (10 s at most): one at a time,
    # the proxy would see no more than one.
    recorder.gate(PREFIX, len(batch))
    got = ds.__getitems__(batch)
    assert [s["seq"] for s in got] == batch
    check_bytes(server, got)
    assert recorder.max_in_flight >= len(batch)


def test_map_dataset_missing_key(server: Server, samples: list[str]) -> None:
    ds = s3_torch.MapDataset(BUCKET, samples[:3] + ["nope"], client_options=options(server.url))
    with pytest.raises(s3_torch.SampleError) as caught:
        list(DataLoader(ds, batch_size=4, num_workers=1))
    assert (caught.value.key, caught.value.seq, caught.value.kind) == ("nope", 3, "not_found")


def test_bad_arguments_are_refused(server: Server, samples: list[str]) -> None:
    opts = options(server.url)
    with pytest.raises(ValueError, match="invalid rank"):
        s3_torch.OrderedDataset(BUCKET, samples, client_options=opts, rank=2, world_size=2)
    with pytest.raises(ValueError, match="invalid batch_size"):
        s3_torch.OrderedDataset(BUCKET, samples, client_options=opts, batch_size=0)
    with pytest.raises(ValueError, match="invalid start"):
        s3_torch.OrderedDataset(BUCKET, samples, client_options=opts, start=COUNT + 1)
    with pytest.raises(ValueError, match="max_connections"):
        s3_torch.OrderedDataset(BUCKET, samples, client_options={"max_connections": 0})
    ds = s3_torch.OrderedDataset(BUCKET, samples, client_options=opts, seed=1)
    state = ds.state_dict()
    other = s3_torch.OrderedDataset(BUCKET, samples, client_options=opts, seed=2)
    with pytest.raises(ValueError, match="seed 1"):
        other.load_state_dict(state)


def test_an_error_rebuilt_from_its_message_keeps_its_fields() -> None:
    # What DataLoader does with a worker's exception: type(e)(formatted traceback).
    err = s3_torch.SampleError(
        "Caught SampleError in DataLoader worker process 0.\nOriginal Traceback:\n  ...\n"
        's3_ordered.torch.SampleError: sample 4: object "k": not found\n'
        's3_ordered sample: {"key": "k", "seq": 4, "kind": "not_found", "status": 404, '
        '"code": "NoSuchKey", "attempts": 1}\n'
    )
    assert (err.key, err.seq, err.kind, err.status, err.code, err.attempts) == (
        "k",
        4,
        "not_found",
        404,
        "NoSuchKey",
        1,
    )
    assert isinstance(err, s3_ordered.ObjectError)
