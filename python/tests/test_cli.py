"""The command line's output read back by Python's own readers."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile

from conftest import BUCKET, Server, _binary


def test_cat_format_tar_reads_back_with_tarfile(server: Server) -> None:
    # A 4 MiB budget streams the 3 MiB object part by part, between whole ones.
    out = subprocess.run(
        [_binary(), "cat", f"s3://{BUCKET}", "--format", "tar", "--quiet"]
        + ["--endpoint-url", server.url, "--max-bytes", "4MiB", "--part-size", "1MiB"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    # S3 lists in UTF-8 byte order, which is code point order.
    keys = sorted(server.objects)
    with tarfile.open(fileobj=io.BytesIO(out.stdout), mode="r|") as archive:
        seen = []
        for member in archive:
            assert member.isfile(), member.name
            data = archive.extractfile(member)
            assert data is not None
            assert data.read() == server.objects[member.name], member.name
            assert member.size == len(server.objects[member.name])
            mtime = int(os.stat(server.root / BUCKET / member.name).st_mtime)
            assert abs(member.mtime - mtime) <= 1, member.name
            seen.append(member.name)
    assert seen == keys
    assert len(out.stdout) % 512 == 0


def test_cat_format_jsonl_writes_a_line_per_text_object(server: Server) -> None:
    bucket = "py-text"
    texts = {"a.json": '{"x": 1}', "b.txt": 'héllo\n"quoted"\t\\', "d.txt": ""}
    for name, text in texts.items():
        path = server.root / bucket / "t" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (server.root / bucket / "t" / "c.bin").write_bytes(b"\xff\xfe")
    out = subprocess.run(
        [_binary(), "cat", f"s3://{bucket}/t/", "--format", "jsonl", "--quiet"]
        + ["--endpoint-url", server.url],
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr
    assert b"t/c.bin" in out.stderr and b"not UTF-8" in out.stderr, out.stderr
    lines = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert lines == [{"key": f"t/{name}", "body": text} for name, text in sorted(texts.items())]
