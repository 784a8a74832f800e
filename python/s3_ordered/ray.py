"""Ray Data reader: a list of keys as a dataset of ``{"key", "seq", "body"}`` rows, in order.

The keys are split into contiguous ranges, one read task each. Every task makes its own
``Client`` inside its worker (from ``client_options``, and the worker's AWS environment), so
the memory of each worker is bounded by that client's ``max_bytes``. Credentials reach the
workers the same way: keys or a ``credential_provider`` in ``client_options`` are passed to
every worker's ``Client`` (a provider is pickled, so it must be a picklable callable, such as
a module-level function), and without them each worker finds its own through the AWS default
chain (its role, its environment); a task hands its rows
to Ray in blocks of at most ``block_bytes`` of bodies. Ray keeps the blocks of a read in
task order when ``DataContext.execution_options.preserve_order`` is on: ``read_objects`` turns
it on in the current context, so the rows come out in the global order of ``keys``.

A failed object fails its read task with ``s3_ordered.ObjectError``, and Ray's usual task
retries apply. The same code runs on one machine or on a cluster (``ray.init(address=...)``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

from . import Client
from ._options import checked

if TYPE_CHECKING:
    import pyarrow
    import ray.data

__all__ = ["read_objects", "read_prefix"]

KeyItem = Union[str, tuple[str, Optional[int]], tuple[str, Optional[int], Optional[str]]]

# Bodies per block handed to Ray.
_BLOCK_BYTES = 64 << 20


def _size_of(item: KeyItem) -> int | None:
    if isinstance(item, tuple) and len(item) >= 2 and isinstance(item[1], int):
        return item[1]
    return None


def _ranges(n: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ranges covering ``0..n``, their lengths differing by at most one."""
    base, extra = divmod(n, shards)
    out, start = [], 0
    for i in range(shards):
        end = start + base + (1 if i < extra else 0)
        out.append((start, end))
        start = end
    return out


def _schema() -> pyarrow.Schema:
    import pyarrow as pa

    return pa.schema([("key", pa.string()), ("seq", pa.int64()), ("body", pa.binary())])


def _read_range(
    bucket: str,
    items: Sequence[KeyItem],
    first_seq: int,
    client_options: dict[str, Any],
    block_bytes: int,
) -> Iterator[pyarrow.Table]:
    """One read task: fetches ``items`` in order with its own client, in blocks."""
    import pyarrow as pa

    client = Client(**client_options)
    keys: list[str] = []
    seqs: list[int] = []
    bodies: list[bytes] = []
    held = 0
    for obj in client.get_all(bucket, items):
        body = obj.read()
        keys.append(obj.key)
        seqs.append(first_seq + obj.seq)
        bodies.append(body)
        held += len(body)
        if held >= block_bytes:
            yield pa.table({"key": keys, "seq": seqs, "body": bodies}, schema=_schema())
            keys, seqs, bodies, held = [], [], [], 0
    if keys or not items:
        yield pa.table({"key": keys, "seq": seqs, "body": bodies}, schema=_schema())


def _datasource(
    bucket: str,
    items: list[KeyItem],
    ranges: list[tuple[int, int]],
    client_options: dict[str, Any],
    block_bytes: int,
) -> ray.data.Datasource:
    from ray.data import Datasource
    from ray.data.block import BlockMetadata
    from ray.data.datasource import ReadTask

    class ObjectsDatasource(Datasource):
        """The read tasks of ``read_objects``: one per range of keys, in order."""

        def estimate_inmemory_data_size(self) -> int | None:
            sizes = [_size_of(i) for i in items]
            return None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)

        def get_read_tasks(self, parallelism: int, *args: Any, **kwargs: Any) -> list[ReadTask]:
            tasks = []
            for start, end in ranges:
                chunk = items[start:end]
                sizes = [_size_of(i) for i in chunk]
                known = None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)
                meta = BlockMetadata(
                    num_rows=len(chunk),
                    size_bytes=known,
                    input_files=None,
                    exec_stats=None,
                )
                read = functools.partial(
                    _read_range, bucket, chunk, start, client_options, block_bytes
                )
                tasks.append(ReadTask(read, meta, schema=_schema()))
            return tasks

        def get_name(self) -> str:
            return "S3Ordered"

    return ObjectsDatasource()  # type: ignore[no-untyped-call]


def read_objects(
    bucket: str,
    keys: Iterable[KeyItem],
    *,
    shards: int | None = None,
    client_options: dict[str, Any] | None = None,
    block_bytes: int = _BLOCK_BYTES,
) -> ray.data.Dataset:
    """A dataset of ``{"key": str, "seq": int, "body": bytes}`` rows, one per key, in the
    order of ``keys`` (``"key"``, ``("key", size)`` or ``("key", size, version_id)``).

    ``shards`` read tasks (default: the cluster's CPUs) each fetch a contiguous range of the
    keys with their own ``Client(**client_options)``. ``seq`` is the row's position in ``keys``.
    """
    import ray
    import ray.data

    items = list(keys)
    if shards is None:
        cpus = 1
        if ray.is_initialized():
            resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
            cpus = int(resources.get("CPU", 1))
        shards = max(1, cpus)
    if shards < 1:
        raise ValueError(f"invalid shards: {shards}; expected at least 1")
    shards = max(1, min(shards, len(items)))
    if block_bytes < 1:
        raise ValueError(f"invalid block_bytes: {block_bytes}; expected at least 1")
    # Fail here, in the driver, on options the workers would refuse (credentials aside: the
    # workers may have their own). Keys and a credential_provider go to the workers as given.
    options = checked(client_options)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    source = _datasource(bucket, items, _ranges(len(items), shards), options, block_bytes)
    dataset: ray.data.Dataset = ray.data.read_datasource(source, override_num_blocks=shards)
    return dataset


def read_prefix(
    bucket: str,
    prefix: str,
    *,
    shards: int | None = None,
    client_options: dict[str, Any] | None = None,
    block_bytes: int = _BLOCK_BYTES,
) -> ray.data.Dataset:
    """Lists ``prefix`` in the driver (keys with their sizes, in S3's order), then reads them
    as ``read_objects`` does."""
    listed = list(Client(**(client_options or {})).list(bucket, prefix))
    return read_objects(
        bucket,
        listed,
        shards=shards,
        client_options=client_options,
        block_bytes=block_bytes,
    )
