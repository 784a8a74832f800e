"""Side-by-side benchmark of Python S3 clients against one local S3 server.

    python python/bench.py [--rounds 3] [--only 4KiB] [--no-ray]

Each scenario (10,000 x 4 KiB, 2,000 x 256 KiB) runs against two local servers in turn:

- ``synthetic``: the Rust benches' object server (``cargo bench --bench compare -- --serve``),
  which answers any GET with the same bytes from memory on one core, so that the clients are
  what is measured;
- ``s3s-fs``: ``s3-ordered serve`` (the release build, built if missing) over the objects
  written to a temporary directory, a real S3 server that checks SigV4 and reads files.

Against each, every client fetches every object of the scenario, in order, in turn,
``--rounds`` times, interleaved:

- ``rust_cli``: ``s3-ordered bench`` (the Rust client, the reference);
- ``s3_ordered``: this package, ``for obj in client.get_all(...): obj.read()``;
- ``boto3_threads``: boto3 ``get_object`` on a ``ThreadPoolExecutor(32)``, in order;
- ``crt``: AWS's CRT-based ``s3torchconnectorclient``, 32 GETs in flight, if it is installed.

Every client runs in its own process with 32 connections; its CPU time (user + system, all
threads) comes from that process. The server shares the machine, so the figures are for this
machine only: compare the ratios within a run. The medians of the rounds are printed, with
objects/s and CPU per object relative to ``rust_cli``. Then Ray's ``read_objects`` runs on 1, 2
and 4 shards of the 4 KiB set on a local cluster (``--no-ray`` skips it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# This script sits beside the package's sources, which lack the compiled extension: import the
# installed package instead.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ACCESS_KEY = "BENCHACCESSKEY"
SECRET_KEY = "bench-secret-key"
BUCKET = "bench"
CONNECTIONS = 32
SCENARIOS = {"4KiB": (10_000, 4 << 10), "256KiB": (2_000, 256 << 10)}
CLIENTS = ["rust_cli", "s3_ordered", "boto3_threads", "crt"]


def keys_of(scenario: str) -> list[str]:
    count, _ = SCENARIOS[scenario]
    return [f"{scenario}/obj-{i:06d}" for i in range(count)]


def write_objects(root: Path, scenario: str) -> None:
    _, size = SCENARIOS[scenario]
    block = os.urandom(size)
    for key in keys_of(scenario):
        path = root / BUCKET / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(block)


def cli_binary() -> Path:
    path = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release" / "s3-ordered"
    if not path.exists():
        subprocess.run(
            ["cargo", "build", "--release", "--quiet", "-p", "s3-ordered-cli"], cwd=REPO, check=True
        )
    return path


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --- the clients, each run in a child process -------------------------------------------------


def run_s3_ordered(url: str, keys: list[str], size: int) -> int:
    import s3_ordered

    client = s3_ordered.Client(endpoint_url=url, max_connections=CONNECTIONS)
    got = 0
    for obj in client.get_all(BUCKET, [(k, size) for k in keys]):
        got += len(obj.read())
    return got


def run_boto3(url: str, keys: list[str], size: int) -> int:
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        config=Config(max_pool_connections=CONNECTIONS, s3={"addressing_style": "path"}),
    )

    def get(key: str) -> int:
        return len(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    with ThreadPoolExecutor(CONNECTIONS) as pool:
        return sum(pool.map(get, keys))


def run_crt(url: str, keys: list[str], size: int) -> int:
    from s3torchconnectorclient._mountpoint_s3_client import MountpointS3Client

    client = MountpointS3Client("us-east-1", endpoint=url, force_path_style=True)
    got, window, pending = 0, CONNECTIONS, []
    it = iter(keys)
    for key in it:
        pending.append(client.get_object(BUCKET, key))
        if len(pending) >= window:
            break
    while pending:
        stream = pending.pop(0)
        for chunk in stream:
            got += len(chunk)
        for key in it:
            pending.append(client.get_object(BUCKET, key))
            break
    return got


def child(client: str, url: str, scenario: str) -> None:
    """Runs one client once and prints its figures as JSON."""
    os.environ["AWS_ACCESS_KEY_ID"] = ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
    keys = keys_of(scenario)
    size = SCENARIOS[scenario][1]
    run = {"s3_ordered": run_s3_ordered, "boto3_threads": run_boto3, "crt": run_crt}[client]
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    got = run(url, keys, size)
    secs, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    assert got == len(keys) * size, f"{client}: {got} bytes, expected {len(keys) * size}"
    print(json.dumps({"seconds": secs, "cpu_seconds": cpu, "objects": len(keys), "bytes": got}))


def measure(client: str, url: str, scenario: str, keys_file: Path) -> dict[str, Any]:
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    if client == "rust_cli":
        cmd = [str(cli_binary()), "bench", f"s3://{BUCKET}", "--keys-from", str(keys_file)]
        cmd += ["--endpoint-url", url, "--max-connections", str(CONNECTIONS), "--json"]
    else:
        cmd = [sys.executable, __file__, "--child", client, url, scenario]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def available(client: str) -> bool:
    module = {"s3_ordered": "s3_ordered", "boto3_threads": "boto3", "crt": "s3torchconnectorclient"}
    if client not in module:
        return True
    probe = [sys.executable, "-c", f"import {module[client]}"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def bench_ray(url: str, shards_list: list[int]) -> None:
    import ray

    from s3_ordered.ray import read_objects

    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    ray.init(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    keys = keys_of("4KiB")
    size = SCENARIOS["4KiB"][1]
    options = {"endpoint_url": url, "max_connections": CONNECTIONS}
    # Warm up: start the workers and import the package in them before timing.
    read_objects(BUCKET, keys[:64], shards=4, client_options=options).materialize()
    print("\nRay read_objects, 10,000 x 4 KiB (cluster and workers already started):")
    print(f"{'shards':>6} {'seconds':>8} {'objects/s':>10}")
    for shards in shards_list:
        t0 = time.perf_counter()
        ds = read_objects(
            BUCKET,
            [(k, size) for k in keys],
            shards=shards,
            client_options=options,
        )
        rows = 0
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            rows += len(batch["seq"])
        secs = time.perf_counter() - t0
        assert rows == len(keys)
        print(f"{shards:>6} {secs:>8.2f} {rows / secs:>10.0f}")
    ray.shutdown()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--server", choices=["synthetic", "s3s-fs"], action="append")
    args = ap.parse_args()
    scenarios = args.only or list(SCENARIOS)
    clients = [c for c in CLIENTS if available(c)]
    missing = sorted(set(CLIENTS) - set(clients))
    if missing:
        print(f"not installed, left out: {', '.join(missing)}")

    servers = args.server or ["synthetic", "s3s-fs"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for sc in scenarios:
            write_objects(root, sc)
            keys_file = root / f"{sc}.keys"
            keys_file.write_text("".join(f"{k}\t{SCENARIOS[sc][1]}\n" for k in keys_of(sc)))
        for name in servers:
            for sc in scenarios:
                with serving(name, root, SCENARIOS[sc][1]) as url:
                    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
                    for _ in range(args.rounds):
                        for c in clients:
                            runs[c].append(measure(c, url, sc, root / f"{sc}.keys"))
                    report(f"{name} server", sc, runs)
        if not args.no_ray and available("s3_ordered") and "4KiB" in scenarios:
            with serving("s3s-fs", root, SCENARIOS["4KiB"][1]) as url:
                bench_ray(url, [1, 2, 4])


@contextlib.contextmanager
def serving(name: str, root: Path, size: int, *, paced: bool = False) -> Iterator[str]:
    """Runs server ``name`` (objects of ``size`` bytes) and yields its URL; ``paced``: the
    synthetic server with 20 ms before each first byte and 50 MB/s per connection."""
    if name == "synthetic":
        cmd = [str(synthetic_server_binary()), "--serve", str(size), "--for", "3600"]
        cmd += ["--paced"] if paced else []
    else:
        cmd = [str(cli_binary()), "serve", "--root", str(root), "--addr", "127.0.0.1:0"]
        cmd += ["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        last = server.stdout.readline().split()[-1]
        yield last if last.startswith("http://") else f"http://{last}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def synthetic_server_binary() -> Path:
    """The compare bench's executable, built if needed."""
    out = subprocess.run(
        ["cargo", "bench", "--bench", "compare", "--no-run", "--message-format=json"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    for line in out.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            if msg["target"]["name"] == "compare":
                return Path(msg["executable"])
    raise RuntimeError("cargo did not report the compare bench's executable")


def report(server: str, scenario: str, runs: dict[str, list[dict[str, Any]]]) -> None:
    count, size = SCENARIOS[scenario]
    rounds = len(next(iter(runs.values())))
    print(f"\n{count:,} x {scenario}, {server} (median of {rounds} rounds):")
    print(
        f"{'client':<14} {'objects/s':>10} {'MB/s':>8} {'CPU us/object':>14} "
        f"{'rate vs rust_cli':>17} {'CPU vs rust_cli':>16}"
    )
    med = {
        c: (
            statistics.median(r["objects"] / r["seconds"] for r in rs),
            statistics.median(r["cpu_seconds"] * 1e6 / r["objects"] for r in rs),
        )
        for c, rs in runs.items()
    }
    base_rate, base_cpu = med["rust_cli"]
    for c, (rate, cpu) in med.items():
        print(
            f"{c:<14} {rate:>10.0f} {rate * size / 1e6:>8.1f} {cpu:>14.1f} "
            f"{rate / base_rate:>16.2f}x {cpu / base_cpu:>15.2f}x"
        )


if __name__ == "__main__":
    main()
