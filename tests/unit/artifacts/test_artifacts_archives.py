import io
import stat
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from stt_operator.artifacts.archives import (
    ArchiveLimits,
    UnsafeArchive,
    detect_archive,
    prepare,
    safe_extract,
)

SMALL = ArchiveLimits(max_total_bytes=8 * 1024 * 1024, max_files=50)


def _zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], gz: bool = False) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = linkname
    return info, data if kind == tarfile.REGTYPE else None


def test_zip_slip_is_refused_and_nothing_lands_outside(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "m.zip", [("model.onnx", b"x"), ("../../evil.txt", b"pwned")])
    with pytest.raises(UnsafeArchive, match=r"'\.\./\.\./evil\.txt'.*path traversal"):
        safe_extract(archive, tmp_path / "out" / "deep", "zip", SMALL)
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out" / "evil.txt").exists()
    assert not (tmp_path / "out" / "deep").exists()  # the partial destination is removed


def test_zip_absolute_path_and_symlink_entries_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchive, match="absolute path"):
        safe_extract(_zip(tmp_path / "a.zip", [("/etc/cron.d/x", b"x")]), tmp_path / "o1", "zip", SMALL)
    link = zipfile.ZipInfo("link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(UnsafeArchive, match="symbolic links are not allowed"):
        safe_extract(_zip(tmp_path / "l.zip", [(link, b"/etc/passwd")]), tmp_path / "o2", "zip", SMALL)


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_member("/abs/model.onnx", data=b"x"), "absolute path"),
        (_member("../escape.onnx", data=b"x"), "path traversal"),
        (_member("model/link", tarfile.SYMTYPE, linkname="/etc/passwd"), "absolute target"),
        (_member("model/link", tarfile.SYMTYPE, linkname="../../../etc/passwd"), "escapes"),
        (_member("model/hard", tarfile.LNKTYPE, linkname="../../outside.bin"), "escapes"),
        (_member("model/dev", tarfile.CHRTYPE), "device"),
    ],
    ids=["absolute", "traversal", "abs-symlink", "escaping-symlink", "escaping-hardlink", "device"],
)
def test_tar_members_that_break_the_rules(tmp_path: Path, member: tuple, reason: str) -> None:
    archive = _tar(tmp_path / "m.tar", [_member("model/ok.txt", data=b"fine"), member])
    with pytest.raises(UnsafeArchive, match=reason) as err:
        safe_extract(archive, tmp_path / "out", "tar", SMALL)
    assert repr(member[0].name)[1:-1] in str(err.value)
    assert not (tmp_path / "out").exists()


def test_tar_gz_bomb_is_stopped_before_inflating(tmp_path: Path) -> None:
    zeros = 64 * 1024 * 1024
    info = tarfile.TarInfo("model/huge.bin")
    info.size = zeros
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tf:
        tf.addfile(info, io.BytesIO(bytes(zeros)))
    assert archive.stat().st_size < zeros / 50
    tracemalloc.start()
    try:
        with pytest.raises(UnsafeArchive, match="decompression bomb"):
            safe_extract(archive, tmp_path / "out", "tar.gz", SMALL)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One compressed read inflates ~1000:1, so the peak is a few MiB whatever the bomb's size.
    assert peak < 16 * 1024 * 1024
    assert not (tmp_path / "out").exists()


def test_zip_bomb_is_stopped_while_streaming_even_if_sizes_lie(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "bomb.zip", [("model/huge.bin", bytes(64 * 1024 * 1024))])
    assert archive.stat().st_size < 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(UnsafeArchive, match="more than 8388608 bytes"):
            safe_extract(archive, tmp_path / "out", "zip", SMALL)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024
    assert not (tmp_path / "out").exists()


def test_file_count_limit(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "many.zip", [(f"f{i}", b"") for i in range(51)])
    with pytest.raises(UnsafeArchive, match="51 entries, over the limit of 50"):
        safe_extract(archive, tmp_path / "out", "zip", SMALL)


def test_good_tar_gz_unpacks_with_in_tree_symlink(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "repo.tar.gz",
        [
            _member("stt/1/model.onnx", data=b"onnx-bytes"),
            _member("stt/config.pbtxt", data=b'name: "stt"'),
            _member("stt/1/alias.onnx", tarfile.SYMTYPE, linkname="model.onnx"),
        ],
        gz=True,
    )
    assert detect_archive(archive) == "tar.gz"
    root = prepare(archive, None, tmp_path / "work", SMALL)
    assert root.name == "stt"
    assert (root / "1" / "model.onnx").read_bytes() == b"onnx-bytes"
    assert (root / "1" / "alias.onnx").is_symlink()


def test_detection_keeps_pytorch_zips_whole_and_checks_declared_kinds(tmp_path: Path) -> None:
    pt = _zip(tmp_path / "model.pt", [("archive/data.pkl", b"\x80\x02.")])
    assert detect_archive(pt) == "none"
    assert detect_archive(pt, "zip") == "zip"
    with pytest.raises(UnsafeArchive, match=r"declared as tar\.gz but its content is zip"):
        detect_archive(pt, "tar.gz")
    with pytest.raises(UnsafeArchive, match=r"source\.archive 'rar'"):
        detect_archive(pt, "rar")
