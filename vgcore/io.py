"""Atomic file writes, checksums and locks.

Every file vgcore writes that another step reads (feature caches, run results) goes through
here: the content is written to a temporary file in the destination's own directory, flushed
to disk and then moved into place with ``os.replace``. A reader therefore sees either the old
file or the complete new one, never a partial write, even if the writer is killed. A killed
writer leaves a hidden ``.tmp-<name>.*`` beside the destination, which :func:`remove_orphans`
deletes the next time that destination is written (a writer keeps its temporary file locked, so a
live one is never taken for an orphan).

:func:`file_lock` is an advisory lock (``flock``) that the operating system releases when its
holder exits or is killed, so a crashed process never leaves a stale lock behind; whoever waits
for it is told who holds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from vgcore.errors import UserError

__all__ = [
    "LockBusyError",
    "atomic_directory",
    "atomic_open",
    "atomic_save_tensor",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "file_digest",
    "file_lock",
    "file_md5",
    "lock_path",
    "plain_json",
    "remove_orphans",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; move it onto ``path`` on success.

    If the block raises (or the process dies) the destination is left untouched and the
    temporary file is removed (or, after a hard kill, left as a hidden ``.tmp-*`` file that no
    reader ever opens, and :func:`remove_orphans` deletes). The temporary file is locked
    (``flock``) until it is in place.
    """
    import fcntl

    if "w" not in mode:
        raise ValueError(f"atomic_open is for writing; got mode {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # this writer is alive: remove_orphans leaves the file
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            os.replace(tmp, path)  # still locked
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON (sorted keys, trailing newline) to ``path`` atomically.

    numpy scalars and arrays are written as numbers and lists; anything else unknown as its ``str``.
    """
    return atomic_write_text(
        path, json.dumps(obj, indent=indent, sort_keys=True, default=_jsonable) + "\n"
    )


def plain_json(obj: Any) -> Any:
    """`obj` as :func:`atomic_write_json` writes it and ``json.loads`` reads it back (numpy scalars
    as numbers, unknown objects as their ``str``): what a digest of written JSON must be taken of."""
    return json.loads(json.dumps(obj, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def atomic_save_tensor(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically (tensors, dicts of tensors, ...)."""
    import torch

    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory in a temporary sibling and rename it to ``path`` on success.

    Yields the temporary directory. On failure it is removed, so ``path`` either does not exist
    or is complete. ``path`` must not exist yet.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}.", dir=path.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file's content, read in chunks."""
    h = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_md5(path: str | os.PathLike) -> str:
    """MD5 of a file (the checksum dataset hosts publish)."""
    return file_digest(path, "md5")


def remove_orphans(directory: str | os.PathLike, name: str) -> list[Path]:
    """Delete the ``.tmp-<name>.*`` files and folders a killed writer of ``<directory>/<name>`` left.

    A file that a live :func:`atomic_open` holds is kept. A folder has no such mark: call it for
    folders only while holding the lock that serialises writers of ``name`` (another writer's
    temporary folder would otherwise be deleted under it). Returns what was removed.
    """
    removed = []
    for orphan in Path(directory).glob(f".tmp-{name}.*"):
        if orphan.is_dir() and not orphan.is_symlink():
            shutil.rmtree(orphan, ignore_errors=True)
        elif _in_use(orphan):
            continue
        else:
            orphan.unlink(missing_ok=True)
        removed.append(orphan)
    return removed


def _in_use(path: Path) -> bool:
    """Whether a live writer holds the lock of temporary file `path` (see :func:`atomic_open`)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file that guards writers of `path`: the hidden ``.<name>.lock`` beside it."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


class LockBusyError(UserError, RuntimeError):
    """Another process holds the lock; the message names it (pid, host, command, since when)."""


def _holder() -> str:
    command = " ".join(Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv))[:300]
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                       "since": time.strftime("%Y-%m-%d %H:%M:%S")})


def describe_holder(lock_path: str | os.PathLike) -> str:
    """Who holds (or last held) a lock: "pid 123 on host (command), since ..."."""
    try:
        info = json.loads(Path(lock_path).read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        info = {}
    if not info:
        return "another process"
    return f"pid {info.get('pid')} on {info.get('host')} ({info.get('command')}), since {info.get('since')}"


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, what: str | None = None, timeout: float | None = None,
              poll: float = 0.2, log=None) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    If another process holds it: wait (telling ``log`` once who holds it), or after ``timeout``
    seconds (0: do not wait) raise :class:`LockBusyError` naming the holder. The lock file is
    never deleted (deleting a lock file races with its next user); it holds the holder's pid,
    host and command while locked.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = describe_holder(path)
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockBusyError(f"{what or path} is in use by {holder}; wait for it to finish "
                                        f"(or stop it) and run again") from None
                if not told and log is not None:
                    log(f"waiting for {what or path}: in use by {holder}")
                    told = True
                time.sleep(poll)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder().encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock
