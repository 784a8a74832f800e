"""PyTorch data loading, side by side: this package's datasets, its own ``get_all`` loop, and
AWS's ``s3torchconnector`` datasets, through ``DataLoader(num_workers=2, batch_size=64)``.

    python python/bench_torch.py [--rounds 3] [--only 4KiB] [--crt-samples 1000]

The server is the Rust benches' paced object server (``cargo bench --bench compare --
--serve SIZE --paced``): 20 ms before each first byte, 50 MB/s per connection, as S3 looks from
one instance. Each scenario (10,000 x 4 KiB, 2,000 x 256 KiB) runs, in turn and ``--rounds``
times interleaved, each of:

- ``get_all``: ``for obj in Client(max_connections=128).get_all(...): obj.read()`` in one
  process, the reference: the same total connections as the two workers below;
- ``OrderedDataset``: ``s3_ordered.torch.OrderedDataset`` (``batch_size=64``, 64 connections
  per worker), every sample checked to come in the list's order;
- ``OrderedDataset:len``: the same with a transform that keeps each body in its worker and
  hands the loader its length: the loader without the cost of moving bodies between processes;
- ``loader only``: no S3 at all, a dataset that yields the same samples from memory (each body
  a fresh copy of one buffer, in the same blocks per worker): what the loader alone can move
  between processes, the ceiling of any dataset through it;
- ``MapDataset``: ``s3_ordered.torch.MapDataset`` with a seeded ``RandomSampler`` (each batch
  one ``get_all`` of 64), checked against the sampler's order;
- ``S3IterableDataset``: ``s3torchconnector``'s, sharding on (its documented way with
  workers), and ``S3MapDataset`` with the same ``RandomSampler``, both reading each object in
  a transform. They are slower by far, so they read the first ``--crt-samples`` samples only
  (their rate is what is compared), and only if ``s3torchconnector`` is installed.

Each runs in a child process of its own; its CPU time includes its loader workers'. Printed:
the medians of samples/s, each rate over ``S3IterableDataset``'s, ``get_all``'s and ``loader
only``'s, CPU per sample, how many samples came in the expected order, and how far the peak RSS
of the largest loader worker rose above its RSS when it started (``get_all``: the process's;
``max_bytes`` is 256 MiB per client).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# The package's sources beside this script lack the compiled extension: import the installed
# package, and the other bench script from here.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import bench  # noqa: E402

BUCKET = "bench"
WORKERS = 2
BATCH = 64
CONNECTIONS = 64  # per worker; the get_all reference has WORKERS times as many
SCENARIOS = {"4KiB": (10_000, 4 << 10), "256KiB": (2_000, 256 << 10)}
CLIENTS = [
    "get_all",
    "OrderedDataset",
    "OrderedDataset:len",
    "loader only",
    "MapDataset",
    "S3IterableDataset",
    "S3MapDataset",
]
CRT = {"S3IterableDataset", "S3MapDataset"}
SAMPLER_SEED = 42


def keys_of(scenario: str) -> list[str]:
    count, _ = SCENARIOS[scenario]
    return [f"{scenario}/obj-{i:06d}" for i in range(count)]


def status_kib(field: str) -> int:
    """A size from this process's ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def worker_init(_: int) -> None:
    """Records, when the loader worker exits, how far its peak RSS rose above its RSS at start,
    in a file named after it in ``$BENCH_RSS_DIR``."""
    from multiprocessing import util

    base = status_kib("VmRSS")
    out = Path(os.environ["BENCH_RSS_DIR"], str(os.getpid()))
    util.Finalize(None, lambda: out.write_text(str(status_kib("VmHWM") - base)), exitpriority=0)


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def read_reader(reader: Any) -> dict[str, Any]:
    """``s3torchconnector``'s transform: the object read whole, as this package's samples."""
    return {"key": reader.key, "body": reader.read()}


def body_length(obj: Any) -> dict[str, Any]:
    """A sample whose body stays in the worker: only its length crosses to the loader."""
    return {"key": obj.key, "body": len(obj.read())}


class FromMemory:
    """``loader only``: the samples of ``keys`` from memory, each body a fresh copy of one
    buffer (as ``Object.read()`` copies its slabs), dealt to the workers in blocks of ``BATCH``
    as ``OrderedDataset`` deals them. Made an ``IterableDataset`` where torch is imported."""

    def __init__(self, keys: list[str], size: int) -> None:
        self.keys = keys
        self.body = bytes(size)

    def __iter__(self) -> Any:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        view = memoryview(self.body)
        for first in range(worker * BATCH, len(self.keys), BATCH * workers):
            for i in range(first, min(first + BATCH, len(self.keys))):
                yield {"key": self.keys[i], "seq": i, "body": bytes(view)}


def sampler_order(n: int) -> list[int]:
    import torch
    from torch.utils.data import RandomSampler

    g = torch.Generator()
    g.manual_seed(SAMPLER_SEED)
    return list(RandomSampler(range(n), generator=g))


def loader_for(client: str, url: str, keys: list[str], size: int) -> Any:
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    g = torch.Generator()
    g.manual_seed(SAMPLER_SEED)
    options = {"endpoint_url": url, "max_connections": CONNECTIONS}
    items = [(k, size) for k in keys]
    if client.startswith("OrderedDataset"):
        from s3_ordered.torch import OrderedDataset

        transform = body_length if client.endswith(":len") else None
        ds: Any = OrderedDataset(
            BUCKET, items, client_options=options, transform=transform, batch_size=BATCH
        )
        return DataLoader(ds, batch_size=BATCH, num_workers=WORKERS, worker_init_fn=worker_init)
    if client == "loader only":
        from torch.utils.data import IterableDataset

        class Memory(FromMemory, IterableDataset[Any]):
            pass

        mem = Memory(keys, size)
        return DataLoader(mem, batch_size=BATCH, num_workers=WORKERS, worker_init_fn=worker_init)
    if client == "MapDataset":
        from s3_ordered.torch import MapDataset

        ds = MapDataset(BUCKET, items, client_options=options)
        sampler = RandomSampler(ds, generator=g)
        return DataLoader(
            ds, batch_size=BATCH, num_workers=WORKERS, sampler=sampler, worker_init_fn=worker_init
        )

    from s3torchconnector import S3ClientConfig, S3IterableDataset, S3MapDataset

    uris = [f"s3://{BUCKET}/{k}" for k in keys]
    common: dict[str, Any] = {
        "region": "us-east-1",
        "endpoint": url,
        "transform": read_reader,
        "s3client_config": S3ClientConfig(force_path_style=True),
    }
    if client == "S3IterableDataset":
        ids = S3IterableDataset.from_objects(uris, enable_sharding=True, **common)
        return DataLoader(ids, batch_size=BATCH, num_workers=WORKERS, worker_init_fn=worker_init)
    mds = S3MapDataset.from_objects(uris, **common)
    sampler = RandomSampler(mds, generator=g)
    return DataLoader(
        mds, batch_size=BATCH, num_workers=WORKERS, sampler=sampler, worker_init_fn=worker_init
    )


def child(client: str, url: str, scenario: str, limit: int) -> None:
    """Runs one client once and prints its figures as JSON."""
    os.environ["AWS_ACCESS_KEY_ID"] = bench.ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = bench.SECRET_KEY
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    size = SCENARIOS[scenario][1]
    keys = keys_of(scenario)
    if client in CRT:
        keys = keys[:limit]
    random_order = client in ("MapDataset", "S3MapDataset")
    expected = [keys[i] for i in sampler_order(len(keys))] if random_order else keys
    got: list[str] = []
    nbytes = 0
    if client == "get_all":
        import s3_ordered

        c = s3_ordered.Client(endpoint_url=url, max_connections=CONNECTIONS * WORKERS)
        rss0 = status_kib("VmRSS")
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        for obj in c.get_all(BUCKET, [(k, size) for k in keys]):
            nbytes += len(obj.read())
            got.append(obj.key)
        secs, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        growth = [status_kib("VmHWM") - rss0]
    else:
        with tempfile.TemporaryDirectory() as rss_dir:
            os.environ["BENCH_RSS_DIR"] = rss_dir
            loader = loader_for(client, url, keys, size)
            cpu0, t0 = cpu_seconds(), time.perf_counter()
            for batch in loader:
                got.extend(batch["key"])
                bodies = batch["body"]
                nbytes += int(bodies.sum()) if client.endswith(":len") else sum(map(len, bodies))
            del loader  # joins the workers, which write their peaks
            secs, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
            growth = [int(p.read_text()) for p in Path(rss_dir).iterdir()]
    assert nbytes == len(keys) * size, f"{client}: {nbytes} bytes, expected {len(keys) * size}"
    assert sorted(got) == sorted(expected), f"{client}: not every sample once"
    in_order = sum(1 for a, b in zip(got, expected) if a == b)
    figures = {
        "samples": len(got),
        "seconds": secs,
        "cpu_seconds": cpu,
        "in_order": in_order,
        "rss_growth_mib": max(growth, default=-1024) / 1024,
    }
    print(json.dumps(figures))


def measure(client: str, url: str, scenario: str, limit: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", client, url, scenario, str(limit)]
    env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{client} failed:\n{out.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def available(client: str) -> bool:
    module = "s3torchconnector" if client in CRT else "torch"
    probe = [sys.executable, "-c", f"import {module}"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def report(scenario: str, runs: dict[str, list[dict[str, Any]]]) -> None:
    count, size = SCENARIOS[scenario]
    rounds = len(next(iter(runs.values())))
    print(f"\n{count:,} x {scenario}, paced server (median of {rounds} rounds):")
    print(
        f"{'client':<18} {'samples':>7} {'samples/s':>10} {'vs S3Iterable':>13} "
        f"{'vs get_all':>10} {'vs loader':>9} {'CPU us/sample':>13} {'in order':>9} "
        f"{'RSS+ MiB':>9}"
    )
    med = {
        c: {
            "rate": statistics.median(r["samples"] / r["seconds"] for r in rs),
            "cpu": statistics.median(r["cpu_seconds"] * 1e6 / r["samples"] for r in rs),
            "in_order": min(r["in_order"] for r in rs),
            "samples": rs[0]["samples"],
            "rss": max(r["rss_growth_mib"] for r in rs),
        }
        for c, rs in runs.items()
    }
    crt = med.get("S3IterableDataset", {}).get("rate")
    ref = med["get_all"]["rate"]
    loader = med.get("loader only", {}).get("rate")
    for c, m in med.items():
        vs_crt = f"{m['rate'] / crt:>12.1f}x" if crt else f"{'-':>13}"
        vs_loader = f"{m['rate'] / loader:>8.2f}x" if loader else f"{'-':>9}"
        print(
            f"{c:<18} {m['samples']:>7} {m['rate']:>10.0f} {vs_crt} {m['rate'] / ref:>9.2f}x "
            f"{vs_loader} {m['cpu']:>13.1f} {m['in_order']:>9} {m['rss']:>9.1f}"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    ap.add_argument("--crt-samples", type=int, default=1000)
    args = ap.parse_args()
    clients = [c for c in CLIENTS if available(c)]
    missing = sorted(set(CLIENTS) - set(clients))
    if missing:
        print(f"not installed, left out: {', '.join(missing)}")
    for scenario in args.only or list(SCENARIOS):
        size = SCENARIOS[scenario][1]
        with bench.serving("synthetic", Path("."), size, paced=True) as url:
            runs: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
            for _ in range(args.rounds):
                for c in clients:
                    runs[c].append(measure(c, url, scenario, args.crt_samples))
            report(scenario, runs)


if __name__ == "__main__":
    main()
