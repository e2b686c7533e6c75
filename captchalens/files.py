"""Writing files and folders so that a reader never sees half of one.

One copy of each: a crash, a full disk or a second process leaves either the old
file (folder) or the new one in place, never a mix.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def sha256_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file, read 1 MB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: str | os.PathLike, data: str | bytes, mode: int = 0o644) -> Path:
    """Replace `path` with `data` all at once: a temp file beside it, fsync, rename.

    `mode` is the new file's permission bits (0o600 for secrets)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w",
                       **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
            f.write(data)
            f.flush()
            if mode != 0o600:
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@contextmanager
def replacing(path: str | os.PathLike, mode: int = 0o644):
    """For writers that want a file name (np.savez, savefig, a TFLite export): yields a temp
    path beside `path`, unique to this call and ending in the same suffix, and renames it onto
    `path` when the block ends without an error (else removes it). Two processes writing the
    same file at once (the workers of a cluster filling one cache) both succeed; the file
    is one writer's whole output."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_dir(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Rename the finished folder `src` onto `dest` (same file system), replacing an older
    `dest`: the old one is renamed aside first and removed only once the new one is in place."""
    src, dest = Path(src), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    os.replace(src, dest)
    shutil.rmtree(old, ignore_errors=True)
