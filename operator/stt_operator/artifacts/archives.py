"""Safe unpacking of `.tar`, `.tar.gz` and `.zip` artifacts.

Tar members go through the standard library's `tarfile.data_filter` (PEP 706: absolute
paths, `..`, links leaving the destination, device files) and are read in stream mode, so a
gzip bomb is stopped by the running byte count, not after it filled the disk. Zip entries
are checked by name and mode here (zipfile has no such filter) and copied in chunks while
counting the bytes actually decompressed — a lying `file_size` field changes nothing.
"""

from __future__ import annotations

import posixpath
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ARCHIVE_KINDS = ("none", "tar", "tar.gz", "zip")
CHUNK = 1024 * 1024


class UnsafeArchive(Exception):
    """The archive was refused; the message names the member and the rule it broke."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_total_bytes: int = 20 * 1024**3
    max_files: int = 10_000


def _magic(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[257:262] == b"ustar":
        return "tar"
    return "unknown"


def detect_archive(path: str | Path, declared: str | None = None) -> str:
    """The archive kind to unpack: the declared one (checked against the content) or, on
    `auto`/empty, one chosen from the file name and confirmed by its magic bytes.

    Auto-detection goes by name first because PyTorch and TorchScript files are zip archives
    that must stay whole.
    """
    p = Path(path)
    if p.is_dir():
        return "none"
    magic = _magic(p)
    kind = (declared or "auto").lower()
    if kind == "auto":
        name = p.name.lower()
        if name.endswith((".tar.gz", ".tgz")):
            kind = "tar.gz"
        elif name.endswith(".tar"):
            kind = "tar"
        elif name.endswith(".zip"):
            kind = "zip"
        else:
            return "none"
    if kind not in ARCHIVE_KINDS:
        raise UnsafeArchive(f"source.archive {declared!r}: expected one of {ARCHIVE_KINDS} or auto")
    expected = {"tar": "tar", "tar.gz": "gzip", "zip": "zip", "none": magic}[kind]
    if magic != expected:
        raise UnsafeArchive(f"{p.name}: declared as {kind} but its content is {magic}")
    return kind


def _check_zip_name(name: str) -> str:
    if "\x00" in name:
        raise UnsafeArchive(f"zip entry {name!r}: NUL byte in the name")
    normal = name.replace("\\", "/")
    if normal.startswith("/") or (len(normal) > 1 and normal[1] == ":"):
        raise UnsafeArchive(f"zip entry {name!r}: absolute path")
    clean = posixpath.normpath(normal)
    if clean == ".." or clean.startswith("../") or ".." in normal.split("/"):
        raise UnsafeArchive(f"zip entry {name!r}: path traversal ('..') outside the destination")
    return clean


def _extract_zip(archive: Path, dest: Path, limits: ArchiveLimits) -> list[Path]:
    written: list[Path] = []
    total = 0
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > limits.max_files:
            raise UnsafeArchive(f"{archive.name}: {len(infos)} entries, over the limit of {limits.max_files}")
        for info in infos:
            clean = _check_zip_name(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UnsafeArchive(
                    f"zip entry {info.filename!r}: symbolic links are not allowed in zip archives"
                )
            # Writers that set no file-type bits (only permissions) mean a regular file.
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise UnsafeArchive(f"zip entry {info.filename!r}: special file (mode {oct(mode)})")
            target = dest / clean
            if not target.resolve().is_relative_to(dest.resolve()):
                raise UnsafeArchive(f"zip entry {info.filename!r}: resolves outside the destination")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                while chunk := src.read(CHUNK):
                    total += len(chunk)
                    if total > limits.max_total_bytes:
                        out.close()
                        target.unlink(missing_ok=True)
                        raise UnsafeArchive(
                            f"{archive.name}: unpacks to more than {limits.max_total_bytes} bytes "
                            f"(stopped at entry {info.filename!r}; decompression bomb?)"
                        )
                    out.write(chunk)
            written.append(target)
    return written


def _extract_tar(archive: Path, dest: Path, limits: ArchiveLimits, compressed: bool) -> list[Path]:
    written: list[Path] = []
    total = 0
    count = 0
    mode = "r|gz" if compressed else "r|"
    try:
        with tarfile.open(archive, mode) as tf:
            for member in tf:
                count += 1
                if count > limits.max_files:
                    raise UnsafeArchive(f"{archive.name}: more than {limits.max_files} entries")
                # data_filter would quietly strip a leading '/'; an absolute name is refused here.
                if member.name.startswith("/") or (len(member.name) > 1 and member.name[1] == ":"):
                    raise UnsafeArchive(f"tar member {member.name!r}: absolute path")
                try:
                    filtered = tarfile.data_filter(member, str(dest))
                except tarfile.FilterError as exc:
                    raise UnsafeArchive(f"tar member {member.name!r}: {_tar_reason(exc)}") from exc
                if filtered is None:
                    continue
                # Sizes in tar headers are what the reader consumes, so summing them before
                # extracting bounds the decompressed bytes of a gzip bomb.
                total += filtered.size
                if total > limits.max_total_bytes:
                    raise UnsafeArchive(
                        f"{archive.name}: unpacks to more than {limits.max_total_bytes} bytes "
                        f"(stopped at member {member.name!r}; decompression bomb?)"
                    )
                tf.extract(filtered, dest, filter="data")
                if filtered.isfile():
                    written.append(dest / filtered.name)
    except (tarfile.ReadError, EOFError, OSError) as exc:
        raise UnsafeArchive(f"{archive.name}: not a readable tar archive ({exc})") from exc
    return written


def _tar_reason(exc: tarfile.FilterError) -> str:
    if isinstance(exc, tarfile.AbsolutePathError):
        return "absolute path"
    if isinstance(exc, tarfile.OutsideDestinationError):
        return "path traversal outside the destination"
    if isinstance(exc, tarfile.AbsoluteLinkError):
        return "link with an absolute target"
    if isinstance(exc, tarfile.LinkOutsideDestinationError):
        return "link that escapes the destination"
    if isinstance(exc, tarfile.SpecialFileError):
        return "device, FIFO or other special file"
    return str(exc)


def safe_extract(
    archive: str | Path, dest: str | Path, kind: str, limits: ArchiveLimits | None = None
) -> list[Path]:
    """Unpack `archive` of `kind` into `dest`; returns the regular files written.

    On any violation the partly written destination is removed before raising.
    """
    limits = limits or ArchiveLimits()
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "zip":
            try:
                return _extract_zip(archive, dest, limits)
            except zipfile.BadZipFile as exc:
                raise UnsafeArchive(f"{archive.name}: not a readable zip archive ({exc})") from exc
        if kind in ("tar", "tar.gz"):
            return _extract_tar(archive, dest, limits, compressed=kind == "tar.gz")
        raise UnsafeArchive(f"{archive.name}: cannot unpack archive kind {kind!r}")
    except UnsafeArchive:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def single_root(directory: Path) -> Path:
    """Archives often wrap everything in one top folder; step into it."""
    entries = [e for e in directory.iterdir() if not e.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return directory


def prepare(path: Path, declared: str | None, work_dir: Path, limits: ArchiveLimits | None = None) -> Path:
    """The directory or file validation looks at: unpacked when an archive, else as is."""
    kind = detect_archive(path, declared)
    if kind == "none":
        return path
    out = work_dir / (path.name + ".d")
    if out.exists():
        shutil.rmtree(out)  # never validate leftovers of an earlier run next to this one
    safe_extract(path, out, kind, limits)
    return single_root(out)


__all__ = [
    "ARCHIVE_KINDS",
    "ArchiveLimits",
    "UnsafeArchive",
    "detect_archive",
    "prepare",
    "safe_extract",
    "single_root",
]
