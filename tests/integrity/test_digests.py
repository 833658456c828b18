"""The one digest cache shared by the staleness ledger and `kiln check`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from kiln.integrity import digests
from kiln.foundation.fsutil import sha256_tree


def _bundle(root):
    bundle = root / "c.mlmodelc"
    (bundle / "weights").mkdir(parents=True)
    (bundle / "model.mil").write_bytes(b"program")
    (bundle / "weights" / "weight.bin").write_bytes(b"w" * 4096)
    (bundle / ".snakemake_timestamp").write_bytes(b"")
    return bundle


def test_bundle_digest_equals_sha256_tree_and_is_remembered_across_processes(tmp_path):
    bundle = _bundle(tmp_path)
    cache_path = tmp_path / "cache.json"
    cache = digests.DigestCache(cache_path)
    assert cache.digest(bundle) == sha256_tree(bundle)
    cache.save()
    # a second process reads the same cache and hashes nothing
    code = ("import sys; from kiln.integrity import digests; hashed = [];"
            "real = digests.sha256_file; digests.sha256_file = lambda p: hashed.append(p) or real(p);"
            "print(digests.DigestCache(sys.argv[1]).digest(sys.argv[2]), len(hashed))")
    out = subprocess.run([sys.executable, "-c", code, str(cache_path), str(bundle)], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    digest, hashed = out.stdout.split()
    assert digest == sha256_tree(bundle) and hashed == "0"
    stored = json.loads(cache_path.read_text())
    assert stored["version"] == digests.CACHE_VERSION
    assert sorted(stored["files"]) == [str(bundle / "model.mil"), str(bundle / "weights" / "weight.bin")]


def test_an_edit_that_keeps_size_and_mtime_is_hashed_again(tmp_path):
    bundle = _bundle(tmp_path)
    weight = bundle / "weights" / "weight.bin"
    cache = digests.DigestCache(tmp_path / "cache.json")
    before = cache.digest(bundle)
    stat = weight.stat()
    weight.write_bytes(b"x" + b"w" * 4095)
    os.utime(weight, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # size and mtime as before; ctime moved
    assert cache.stale_files(bundle) == [str(weight)]
    assert cache.digest(bundle) == sha256_tree(bundle) != before


def test_a_damaged_or_unwritable_cache_only_costs_time(tmp_path):
    bundle = _bundle(tmp_path)
    damaged = tmp_path / "cache.json"
    damaged.write_text("{not json")
    assert digests.DigestCache(damaged).digest(bundle) == sha256_tree(bundle)
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    cache = digests.DigestCache(blocked / "cache.json")
    cache.digest(bundle)
    cache.save()  # cannot write below a file: no error, still dirty
    assert cache.dirty


def test_forget_missing_drops_deleted_files(tmp_path):
    bundle = _bundle(tmp_path)
    cache = digests.DigestCache(None)
    cache.digest(bundle)
    (bundle / "model.mil").unlink()
    cache.forget_missing()
    assert list(cache.entries) == [str(bundle / "weights" / "weight.bin")]


def test_sha256_file_hashes_large_files_through_a_mapping_and_small_ones_by_reading(tmp_path, monkeypatch):
    import hashlib
    import mmap
    import random

    from kiln.foundation import fsutil

    monkeypatch.setattr(fsutil, "MAP_HASH_MIN_BYTES", 4096)
    mapped = []
    real_mmap = mmap.mmap
    monkeypatch.setattr(fsutil.mmap, "mmap", lambda *a, **k: mapped.append(a) or real_mmap(*a, **k))
    rng = random.Random(0)
    for size in (0, 1, 4095, 4096, 3 * (1 << 20) + 7):
        data = rng.randbytes(size)
        file = tmp_path / f"f{size}"
        file.write_bytes(data)
        assert fsutil.sha256_file(file) == hashlib.sha256(data).hexdigest(), size
        assert fsutil.sha256_file(file, chunk=1000) == hashlib.sha256(data).hexdigest(), size
    assert len(mapped) == 4  # the two files at or above the threshold, twice each


def test_bundle_files_are_listed_in_sha256_trees_order(tmp_path):
    """The scandir listing equals the sorted ``rglob`` it replaced: path components order ("a/b"
    before "a-b"), links to files kept, linked folders not entered, markers and broken links left out."""
    from pathlib import Path

    bundle = tmp_path / "b.mlpackage"
    (bundle / "a").mkdir(parents=True)
    (bundle / "Data" / "x").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o").write_bytes(b"o")
    for rel in ("a/b", "a-b", "Data/x/f", ".hidden", ".snakemake_timestamp"):
        (bundle / rel).write_bytes(rel.encode())
    (bundle / "linked_file").symlink_to(outside / "o")
    (bundle / "linked_folder").symlink_to(outside)
    (bundle / "broken").symlink_to(tmp_path / "nowhere")

    def rglob_order(root):
        return [str(p) for p in sorted(Path(root).rglob("*")) if p.is_file() and p.name != ".snakemake_timestamp"]

    for given in (bundle, str(bundle) + "/", tmp_path / "missing", outside / "o"):
        assert digests.bundle_files(given) == rglob_order(given)
    assert [Path(f).relative_to(bundle).as_posix() for f in digests.bundle_files(bundle)] == \
        [".hidden", "Data/x/f", "a/b", "a-b", "linked_file"]
    assert digests.DigestCache(None).digest(bundle) == sha256_tree(bundle)
