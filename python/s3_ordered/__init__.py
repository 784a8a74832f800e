"""Fetch many S3 objects concurrently and get them back in the order asked for, in bounded memory.

A thin layer over the Rust crate ``s3_ordered``::

    import s3_ordered

    client = s3_ordered.Client(max_connections=64, max_bytes="256MiB")
    for obj in client.get_all("bucket", ["a.json", ("b.json", 2048)]):
        data = obj.read()

``get_all`` yields exactly one result per key, in input order. A failed object raises
``ObjectError`` at its position and the iteration goes on with the next object on the next
``next()``; with ``errors="return"`` the ``ObjectError`` is yielded in its place instead.
Body memory counts against ``max_bytes`` until the body is read with ``read()`` or released;
a ``next()`` that would wait for ever on memory only its caller holds raises
``MemoryHeldError`` after a short grace.
``s3_ordered.ray`` reads a key list into a Ray dataset, sharded over a cluster, in order; it is
loaded on first use, and Ray only when a dataset is read. ``s3_ordered.torch`` holds PyTorch
datasets whose order through a ``DataLoader`` is exact, seeded, sharded over ranks and
resumable (``pip install s3-ordered[torch]``); it imports torch when it is first used.
"""

import importlib
import types

from ._native import (
    Body,
    Client,
    ListIterator,
    MemoryHeldError,
    Object,
    ObjectError,
    ObjectIterator,
)
from .credentials import CredentialDict, CredentialProvider

__all__ = [
    "Body",
    "Client",
    "CredentialDict",
    "CredentialProvider",
    "ListIterator",
    "MemoryHeldError",
    "Object",
    "ObjectError",
    "ObjectIterator",
]


def __getattr__(name: str) -> types.ModuleType:
    # ``s3_ordered.ray`` and ``s3_ordered.torch`` without an import of their own: loaded on
    # first use.
    if name in ("ray", "torch"):
        return importlib.import_module(".ray", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
