"""Getting dataset files: downloads with checksums, safe extraction, archive-distributed datasets.

Downloads are atomic (a temporary file renamed into place) and checked against the published MD5;
extraction happens in a temporary folder renamed into place, so nothing is ever half-extracted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vgcore.data.base import DataIntegrityError, not_found
from vgcore.io import atomic_open, file_md5


@dataclass(frozen=True)
class Remote:
    """One downloadable file: where it lives, its name on disk and its published MD5."""

    url: str
    filename: str
    md5: str | None



DOWNLOAD_TIMEOUT_S = 60.0


def fetch_file(url: str, dest: Path, md5: str | None) -> Path:
    """Fetch ``url`` to ``dest`` atomically, verifying ``md5``. Network errors propagate as OSError."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    req = urllib.request.Request(url, headers={"User-Agent": "vgcore (python urllib)"})
    with (
        urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT_S) as resp,
        atomic_open(dest, "wb") as fh,
    ):
        digest = hashlib.md5(usedforsecurity=False)
        length = getattr(resp, "length", None)  # absent for file:// URLs
        total = length if isinstance(length, int) else None
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=f"download {dest.name}", leave=False
        ) as bar:
            while chunk := resp.read(1 << 20):
                fh.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
        if md5 is not None and digest.hexdigest() != md5:
            raise DataIntegrityError(
                f"downloaded {url} but its MD5 is {digest.hexdigest()}, expected {md5}; nothing was kept. "
                "The server sent something else (an error page, or a changed file): try again later "
                "or download it by hand and check it."
            )
    return dest


def verify(path: Path, md5: str | None, url: str) -> None:
    if md5 is None:
        return
    got = file_md5(path)
    if got != md5:
        raise DataIntegrityError(
            f"checksum mismatch for {path}: MD5 {got}, expected {md5}. The file is incomplete or "
            f"corrupt: delete it and run again (it will be downloaded from {url}), or fetch it again by hand."
        )


def _unpack(archive: Path, into: Path) -> None:
    name = archive.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():  # refuse absolute paths and ..
                target = (into / member).resolve()
                if not target.is_relative_to(into.resolve()):
                    raise DataIntegrityError(f"{archive}: unsafe member path {member!r}")
            zf.extractall(into)
    else:
        with tarfile.open(archive, "r:*") as tf:
            tf.extractall(into, filter="data")


def extract(archive: Path, dest_dir: Path, folder: str) -> Path:
    """Extract ``archive`` and move its top-level ``folder`` to ``dest_dir/folder``, all or nothing."""
    final = dest_dir / folder
    if final.exists():
        raise DataIntegrityError(
            f"{final} exists but is incomplete (a file that should be there is missing); "
            f"delete it and run again to re-extract {archive.name}"
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".extract-{folder}.", dir=dest_dir))
    try:
        try:
            _unpack(archive, tmp)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
            raise DataIntegrityError(
                f"could not extract {archive}: {type(e).__name__}: {e}. The archive is truncated or "
                "corrupt: delete it and run again. Nothing was extracted."
            ) from e
        if not (tmp / folder).is_dir():
            raise DataIntegrityError(f"{archive} does not contain the expected folder {folder}/")
        os.replace(tmp / folder, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def archive_dataset(
    name: str,
    root: Path,
    remote: Remote,
    folder: str,
    is_complete: Callable[[Path], bool],
    download: bool,
    contents: str = "",
) -> Path:
    """Find ``folder`` under ``root/name`` or ``root``; else extract a local or downloaded archive.

    The search order, and the ways to get the data that a :class:`DataNotFoundError` lists, are
    the same for every dataset distributed as one archive; ``contents`` describes the folder.
    """
    ways = archive_ways(name, remote, folder, contents)
    base = root / name
    for cand in (base / folder, root / folder):
        if is_complete(cand):
            return cand
    looked = [base / folder, root / folder]
    for archive in (base / remote.filename, root / remote.filename):
        looked.append(archive)
        if archive.is_file():
            verify(archive, remote.md5, remote.url)
            out = extract(archive, base, folder)
            if not is_complete(out):
                raise DataIntegrityError(f"{archive} extracted to {out} but files are missing")
            return out
    if not download:
        raise not_found(name, root, looked, ways, cause="download=False")
    archive = base / remote.filename
    try:
        fetch_file(remote.url, archive, remote.md5)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise not_found(name, root, looked, ways, cause=f"{remote.url}: {e}") from e
    out = extract(archive, base, folder)
    if not is_complete(out):
        raise DataIntegrityError(f"{archive} extracted to {out} but files are missing")
    return out


def archive_ways(name: str, remote: Remote, folder: str, contents: str = "") -> tuple[str, ...]:
    """The three ways to get an archive-distributed dataset, for a DataNotFoundError."""
    inside = f" ({contents})" if contents else ""
    return (
        f"connect to the internet and run again with download=True (the default): {remote.url} "
        "is fetched, checked (MD5) and extracted",
        f"download {remote.filename} yourself and put it in <root>/{name}/ (it is checked and extracted)",
        f"put the extracted {folder}/ folder{inside} in <root>/{name}/ (or directly in <root>/)",
    )
