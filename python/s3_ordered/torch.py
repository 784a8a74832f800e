"""PyTorch datasets over ``get_all``: an exact, seeded, sharded and resumable sample order.

``OrderedDataset`` is an ``IterableDataset`` for ``DataLoader``:

* **Epoch order.** The order of ``keys``, or with ``shuffle=True`` the permutation
  ``torch.randperm(len(keys))`` drawn from ``seed + epoch`` (as ``DistributedSampler`` draws
  it): the same on every rank and worker, with no communication, and another after
  ``set_epoch``.
* **Ranks.** Rank ``r`` of ``R`` takes the epoch order's samples ``r, r+R, r+2R, ...``; every rank
  yields ``len(ds)`` samples, an uneven count padded from the start of the epoch order or cut
  with ``drop_last=True``, as ``DistributedSampler`` does.
* **Workers.** A rank's samples are dealt to the loader's workers in blocks of ``batch_size``
  (worker ``w`` of ``W`` takes blocks ``w, w+W, ...``). The loader takes batch ``k`` from worker
  ``k mod W``, so with the same ``batch_size`` given to the loader (or ``None`` to both) the
  loader's output, flattened, is the rank's order exactly.
* **Fetching.** Each worker (or the process itself, with ``num_workers=0``) fetches its share
  through one ``get_all`` of its own ``Client(**client_options)``, made in that process: order,
  budgets, retries, hedging and checksums are the engine's, and ``max_bytes`` bounds the
  memory of each worker.
* **Resuming.** ``start=N`` begins the rank's epoch at its sample ``N``; ``state_dict()`` and
  ``load_state_dict()`` follow torchdata's ``StatefulDataLoader``, which restores each worker
  where it stopped. No GET is sent for a sample before the resumed position.

``MapDataset`` is a map-style dataset for samplers: ``ds[i]`` is one GET, and a batch of indices
(``__getitems__``, which ``DataLoader`` calls) is fetched concurrently through one ``get_all``.

A sample is ``transform(obj)`` for the fetched ``s3_ordered.Object`` (run in the worker; the
object's memory returns to the budget when the transform lets go of it), or without a
transform ``{"key": str, "seq": int, "body": bytes}``, where ``seq`` is the sample's index in
``keys``. A failed object raises ``SampleError``, an ``ObjectError`` that keeps its fields when
the loader re-raises it from a worker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Optional, Union

import torch
import torch.distributed
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from . import Client, Object, ObjectError
from ._options import checked

__all__ = ["MapDataset", "OrderedDataset", "SampleError"]

KeyItem = Union[str, tuple[str, Optional[int]], tuple[str, Optional[int], Optional[str]]]
Transform = Callable[[Object], Any]

# Marks the line of a ``SampleError``'s message that carries its fields, so that the error a
# loader rebuilds from the message alone (``type(e)(message)``) has them again.
_FIELDS_MARK = "s3_ordered sample: "


class SampleError(ObjectError):
    """The failure of one sample's object: an ``ObjectError`` whose ``seq`` is the sample's
    index in ``keys``. ``DataLoader`` re-raises a worker's error as ``type(e)(message)``; this
    one reads its fields (``key``, ``seq``, ``kind``, ``status``, ``code``, ``attempts``) back
    from its message, so they reach the training loop."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        fields: dict[str, Any] = {}
        mark = message.rfind(_FIELDS_MARK)
        if mark >= 0:
            line = message[mark + len(_FIELDS_MARK) :].split("\n", 1)[0]
            try:
                fields = json.loads(line)
            except ValueError:
                fields = {}
        self.key = fields.get("key")
        self.seq = fields.get("seq")
        self.kind = fields.get("kind", "unknown")
        self.status = fields.get("status")
        self.code = fields.get("code")
        self.attempts = fields.get("attempts", 0)

    @classmethod
    def of(cls, error: ObjectError, index: int) -> SampleError:
        """``error``, for the sample at ``index`` of ``keys``."""
        fields = {
            "key": error.key,
            "seq": index,
            "kind": error.kind,
            "status": error.status,
            "code": error.code,
            "attempts": error.attempts,
        }
        return cls(f"sample {index}: {error}\n{_FIELDS_MARK}{json.dumps(fields)}")


def _listed(bucket: str, prefix: str, client_options: dict[str, Any] | None) -> list[KeyItem]:
    """The keys under ``prefix`` with their sizes, in the listing's order."""
    return list(Client(**(client_options or {})).list(bucket, prefix))


class _ProcessClient:
    """One ``Client`` per process, made on first use in that process (after a fork or in a
    spawned worker), never pickled."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self._client: Client | None = None
        self._pid = -1

    def get(self) -> Client:
        if self._client is None or self._pid != os.getpid():
            self._client = Client(**self.options)
            self._pid = os.getpid()
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.options = state["options"]
        self._client = None
        self._pid = -1


def _sample(obj: Object, index: int, transform: Transform | None) -> Any:
    if transform is not None:
        return transform(obj)
    return {"key": obj.key, "seq": index, "body": obj.read()}


def _distributed() -> tuple[int, int] | None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return None


def _epoch_order(n: int, shuffle: bool, seed: int, epoch: int) -> Sequence[int]:
    """The epoch's order of the ``n`` samples: as given, or ``DistributedSampler``'s
    permutation for ``seed + epoch``."""
    if not shuffle:
        return range(n)
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    order: list[int] = torch.randperm(n, generator=g).tolist()
    return order


class OrderedDataset(IterableDataset[Any]):
    """The objects of ``keys`` as samples in an exact order, for ``DataLoader``: the epoch's
    order (``keys``, or seeded with ``shuffle=True``), this rank's share of it, dealt to the
    loader's workers in blocks of ``batch_size`` so that the loader yields the share in order.

    ``keys``: what ``Client.get_all`` takes (``"key"``, ``("key", size)``,
    ``("key", size, version_id)``); sizes let the engine plan large objects ahead.
    ``client_options``: the keyword arguments of each worker's ``Client`` (made in the worker;
    ``max_bytes`` bounds each worker's memory; a ``credential_provider`` must pickle under the
    ``spawn`` and ``forkserver`` start methods). ``transform(obj)`` makes a sample of an
    ``Object`` in the worker. ``batch_size``: the loader's (``None`` when the loader's is
    ``None``). ``shuffle``, ``seed``: the epoch order. ``rank``, ``world_size``: this
    process's share (default: ``torch.distributed``'s when it is initialised, else 0 of 1).
    ``drop_last``: cut the ranks to an equal count instead of padding. ``start``: begin this
    rank's current epoch at its sample ``start``, with no GET for the ones before.
    """

    def __init__(
        self,
        bucket: str,
        keys: Iterable[KeyItem],
        *,
        client_options: dict[str, Any] | None = None,
        transform: Transform | None = None,
        batch_size: int | None = 1,
        shuffle: bool = False,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
        start: int = 0,
    ) -> None:
        self.bucket = bucket
        self.items: list[KeyItem] = list(keys)
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"invalid batch_size: {batch_size!r}; expected at least 1, or None")
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        dist_rank, dist_world = _distributed() or (0, 1)
        rank = dist_rank if rank is None else rank
        world_size = dist_world if world_size is None else world_size
        if world_size < 1:
            raise ValueError(f"invalid world_size: {world_size}; expected at least 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"invalid rank: {rank}; expected 0 <= rank < {world_size}")
        self.rank, self.world_size = rank, world_size
        self.drop_last = bool(drop_last)
        n = len(self.items)
        if self.drop_last and n % world_size:
            self.num_samples = n // world_size
        else:
            self.num_samples = -(-n // world_size)
        self.transform = transform
        self._client = _ProcessClient(checked(client_options))
        # [epoch, the epoch `start` is for, start], in memory shared with the loader's workers,
        # so that `set_epoch` reaches persistent workers too.
        self._shared = torch.zeros(3, dtype=torch.int64).share_memory_()  # type: ignore[no-untyped-call]
        self._set_start(0, start)
        # This process's progress in its share of the current pass: how many samples to skip
        # (restored by `load_state_dict`, used by the next pass), and how many were yielded.
        self._skip: tuple[int, int] | None = None
        self._yielded = 0

    @classmethod
    def from_prefix(cls, bucket: str, prefix: str, **kwargs: Any) -> OrderedDataset:
        """The objects under ``prefix``, listed once here (in the listing's order, with their
        sizes); ``kwargs`` as for ``OrderedDataset``."""
        return cls(bucket, _listed(bucket, prefix, kwargs.get("client_options")), **kwargs)

    @property
    def epoch(self) -> int:
        """The current epoch (0 until ``set_epoch``)."""
        return int(self._shared[0])

    @property
    def start(self) -> int:
        """Where this rank's current epoch begins (0 but when resumed)."""
        return int(self._shared[2]) if int(self._shared[1]) == self.epoch else 0

    def set_epoch(self, epoch: int, *, start: int | None = None) -> None:
        """Makes ``epoch`` the current one (its shuffled order, from ``seed + epoch``); it
        reaches workers that persist across epochs. A new epoch begins at sample 0, or at
        ``start``; setting the current epoch again keeps where it begins."""
        if epoch < 0:
            raise ValueError(f"invalid epoch: {epoch}; expected at least 0")
        if start is None:
            start = self.start if epoch == self.epoch else 0
        self._set_start(epoch, start)

    def _set_start(self, epoch: int, start: int) -> None:
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"invalid start: {start}; expected 0 <= start <= {self.num_samples}")
        self._shared[0] = epoch
        self._shared[1] = epoch
        self._shared[2] = start

    def __len__(self) -> int:
        """This rank's samples in an epoch."""
        return self.num_samples

    def _worker(self) -> tuple[int, int]:
        """(this worker's id, the loader's workers); (0, 0) without workers."""
        info = get_worker_info()
        return (0, 0) if info is None else (info.id, info.num_workers)

    def _share(self, epoch: int, start: int, worker: int, workers: int) -> list[int]:
        """The indices into ``keys`` of the samples this worker yields, from the rank's sample
        ``start`` on, in order."""
        n = len(self.items)
        if n == 0:
            return []
        order = _epoch_order(n, self.shuffle, self.seed, epoch)
        block = self.batch_size or 1
        stride = block * max(workers, 1)
        rank, world = self.rank, self.world_size
        out = []
        for first in range(start + worker * block, self.num_samples, stride):
            for p in range(first, min(first + block, self.num_samples)):
                # Past the end of the epoch order, the padding repeats it from its start.
                out.append(order[(rank + p * world) % n])
        return out

    def __iter__(self) -> Iterator[Any]:
        epoch, start = self.epoch, self.start
        worker, workers = self._worker()
        skip = 0
        if self._skip is not None:
            skip_epoch, skip = self._skip
            self._skip = None
            if skip_epoch != epoch:
                skip = 0
        share = self._share(epoch, start, worker, workers)[skip:]
        self._yielded = skip
        return self._fetch(share)

    def _fetch(self, share: list[int]) -> Iterator[Any]:
        if not share:
            return
        items = self.items
        client = self._client.get()
        with client.get_all(self.bucket, [items[i] for i in share], errors="return") as results:
            for index, result in zip(share, results):
                if isinstance(result, ObjectError):
                    raise SampleError.of(result, index) from None
                sample = _sample(result, index, self.transform)
                del result
                # Counted before it is handed out: a loader may take a snapshot right after.
                self._yielded += 1
                yield sample

    def state_dict(self) -> dict[str, Any]:
        """Where this copy of the dataset stands in its epoch (in a worker: that worker's
        share), for torchdata's ``StatefulDataLoader``; plain data."""
        worker, workers = self._worker()
        return {
            "epoch": self.epoch,
            "start": self.start,
            "yielded": self._yielded,
            "worker": worker,
            "num_workers": workers,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Goes on where ``state`` (from ``state_dict``) stood: the next pass of this copy
        begins after the samples it had yielded, sending no GET for them. The dataset and the
        loader's ``num_workers`` must be the ones the state was taken with."""
        worker, workers = self._worker()
        mine = {
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_workers": workers,
            "worker": worker,
        }
        differ = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if differ:
            said = ", ".join(f"{k} {was!r} (now {now!r})" for k, (was, now) in differ.items())
            raise ValueError(f"the state was taken from another dataset or loader: {said}")
        epoch, start, yielded = int(state["epoch"]), int(state["start"]), int(state["yielded"])
        self._set_start(epoch, start)
        self._skip = (epoch, yielded)
        self._yielded = yielded


class MapDataset(Dataset[Any]):
    """The objects of ``keys`` by index, for samplers (``RandomSampler``,
    ``DistributedSampler``): ``ds[i]`` is one GET, and ``__getitems__(indices)``, which
    ``DataLoader`` calls with a whole batch, fetches the batch concurrently through one
    ``get_all``, in the batch's order. Each process (each worker) makes its own
    ``Client(**client_options)``; ``transform`` as for ``OrderedDataset``."""

    def __init__(
        self,
        bucket: str,
        keys: Iterable[KeyItem],
        *,
        client_options: dict[str, Any] | None = None,
        transform: Transform | None = None,
    ) -> None:
        self.bucket = bucket
        self.items: list[KeyItem] = list(keys)
        self.transform = transform
        self._client = _ProcessClient(checked(client_options))

    @classmethod
    def from_prefix(cls, bucket: str, prefix: str, **kwargs: Any) -> MapDataset:
        """The objects under ``prefix``, listed once here; ``kwargs`` as for ``MapDataset``."""
        return cls(bucket, _listed(bucket, prefix, kwargs.get("client_options")), **kwargs)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        n = len(self.items)
        wanted = []
        for i in indices:
            i = int(i)
            if not -n <= i < n:
                raise IndexError(f"sample index {i} out of range for {n} samples")
            wanted.append(i % n)
        client = self._client.get()
        out = []
        with client.get_all(self.bucket, [self.items[i] for i in wanted], errors="return") as it:
            for index, result in zip(wanted, it):
                if isinstance(result, ObjectError):
                    raise SampleError.of(result, index) from None
                out.append(_sample(result, index, self.transform))
                del result
        return out
