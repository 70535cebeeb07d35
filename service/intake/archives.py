"""Dataset zips: no absolute paths, no ``..``, no links, a cap on entries and on uncompressed bytes
(counted while extracting, not trusted from the zip directory), images only, every image decoded."""

from __future__ import annotations

import errno
import shutil
import stat
import struct
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator

import msgspec

from neurflow.service.errors import Invalid, TooLarge
from neurflow.service.intake.images import IMAGE_SUFFIXES, PixelBudget, decode_image

IGNORED_PREFIXES = ("__MACOSX/",)


class DatasetInfo(msgspec.Struct):
    n_images: int
    classes: list[str]
    size: int


def _safe_member(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The relative path of an image member, None for ignorable entries; ``Invalid`` if unsafe."""
    name = info.filename
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise Invalid(f"zip entry {name!r} has an absolute or Windows path; only relative paths are accepted")
    path = PurePosixPath(name)
    if any(part in ("..", ".") for part in path.parts):
        raise Invalid(f"zip entry {name!r} escapes the dataset folder (path traversal)")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise Invalid(f"zip entry {name!r} is a symbolic link; links are not accepted")
    if info.is_dir() or name.startswith(IGNORED_PREFIXES) or any(p.startswith(".") for p in path.parts):
        return None
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise Invalid(f"zip entry {name!r} is not a PNG or JPEG image; a dataset zip holds images only")
    if len(path.parts) > 4:
        raise Invalid(f"zip entry {name!r} is nested too deep; use a flat zip or one folder per class")
    if info.flag_bits & 0x1:
        raise Invalid(f"zip entry {name!r} is encrypted")
    return path


def extract_dataset(zip_path: str | Path, dest: str | Path, *, max_entries: int, max_bytes: int,
                    max_pixels: int, max_total_pixels: int | None = None) -> DatasetInfo:
    """Extract a checked dataset zip into ``dest``: ``images/...`` laid out flat or one folder per class."""
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, struct.error):
        raise Invalid("the dataset upload is not a valid zip archive") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_entries:
            raise TooLarge(f"the zip has {len(infos)} entries; at most {max_entries} are accepted")
        members = [(info, p) for info in infos if (p := _safe_member(info)) is not None]
        if not members:
            raise Invalid("the zip holds no PNG or JPEG images")
        declared = sum(info.file_size for info, _ in members)
        if declared > max_bytes:
            raise TooLarge(f"the zip expands to {declared} bytes; at most {max_bytes} are accepted")
        # one wrapping folder (zip of a folder) is stripped
        tops = {p.parts[0] for _, p in members}
        strip = 1 if len(tops) == 1 and all(len(p.parts) > 1 for _, p in members) else 0
        rels = [PurePosixPath(*p.parts[strip:]) for _, p in members]
        if len({r.as_posix().lower() for r in rels}) != len(rels):
            raise Invalid("the zip holds two entries with the same path")
        classes = sorted({r.parts[0] for r in rels if len(r.parts) > 1})
        tmp = dest.with_name(dest.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        total = 0
        budget = PixelBudget(max_total_pixels) if max_total_pixels else None
        try:
            for (info, original), rel in zip(members, rels):
                with _entry_errors(original):
                    total += _extract_member(zf, info, tmp / "images" / rel, original, total, max_bytes)
                decode_image(tmp / "images" / rel, max_pixels, name=f"zip entry {str(original)[:200]}", budget=budget)
            shutil.rmtree(dest, ignore_errors=True)
            tmp.replace(dest)
        except (zipfile.BadZipFile, EOFError, zlib_error(), NotImplementedError, RuntimeError, ValueError,
                struct.error) as exc:
            # unsupported compression methods, bad CRCs, truncated members: the archive's fault
            shutil.rmtree(tmp, ignore_errors=True)
            raise Invalid(f"the zip archive is corrupt or uses an unsupported feature ({type(exc).__name__}); "
                          "a plain (stored or deflated) zip of images is accepted") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return DatasetInfo(n_images=len(rels), classes=classes, size=total)


def _shown(entry: PurePosixPath | str) -> str:
    return repr(str(entry)[:200])


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, original: PurePosixPath,
                    total: int, max_bytes: int) -> int:
    """Write one member to ``target``, counting what it really expands to; return its size."""
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with zf.open(info) as src, open(target, "wb") as out:
        while block := src.read(1 << 16):
            written += len(block)
            if written > info.file_size or total + written > max_bytes:
                raise TooLarge(f"zip entry {_shown(original)} expands past its declared or the allowed size")
            out.write(block)
    return written


#: errors of the server's disk, not of the archive: a full disk stays a 507, a read-only one a 503
SERVER_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)


@contextmanager
def _entry_errors(entry: PurePosixPath) -> Iterator[None]:
    """An entry the file system refuses (a name too long, a file where a folder must go, a name it cannot
    hold) is the archive's fault: 422 naming the entry."""
    try:
        yield
    except OSError as exc:
        if exc.errno in SERVER_ERRNOS:
            raise
        reason = exc.strerror or type(exc).__name__
        raise Invalid(f"zip entry {_shown(entry)} cannot be extracted ({reason}); use short plain names, and no "
                      "entry that is both a file and a folder") from None


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error
