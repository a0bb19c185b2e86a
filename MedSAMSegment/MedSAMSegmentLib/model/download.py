"""Atomic, resumable, checksummed download of weights files (urllib only).

The file is written to "<dest>.part" and renamed only once its size and checksum are right, so
the final name either holds a verified file or nothing. An interrupted transfer is resumed with
an HTTP Range request, within the same call (a few attempts) or by a later call; the ".part" is
kept only when the server can resume it (and the error says so), else deleted. The body is capped:
the expected size when known, else the announced Content-Length, else MAX_DOWNLOAD_BYTES, so an
endless answer cannot fill the disk.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from .. import __version__
from ..errors import CancelledError, DownloadError

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, "int | None"], None]
CancelFn = Callable[[], bool]

_USER_AGENT = f"medsam-segment/{__version__}"
# Errors that can end a transfer half way; the attempt is retried when it brought new bytes.
_TRANSIENT = (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError, http.client.HTTPException)
# The most a download without a known size may bring (MedSAM ViT-B is 358 MB; SAM ViT-H 2.6 GB).
MAX_DOWNLOAD_BYTES = 4 << 30


# One download per destination at a time in this process (Slicer may ask from two places at once).
_DEST_LOCKS: dict[str, threading.Lock] = {}
_DEST_LOCKS_GUARD = threading.Lock()


class _Interrupted(Exception):
    """A transfer ended early (connection closed, reset or timed out while reading)."""

    def __init__(self, message: str, resumable: bool):
        super().__init__(message)
        self.resumable = resumable  # whether the server can continue it with a Range request


def part_path(dest: str | os.PathLike) -> Path:
    """Where an unfinished download of dest is kept."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    expected_size: int | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    timeout: float = 30,
    chunk_size: int = 1 << 20,
    *,
    attempts: int = 3,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
) -> Path:
    """Download url to dest; return dest. See the module docstring for the guarantees."""
    from .weights import normalise_sha256

    dest = Path(dest).expanduser()
    sha256 = normalise_sha256(sha256)
    _check_url(url)
    with _dest_lock(dest):
        if dest.exists():
            return _existing(dest, url, sha256, expected_size)
        _make_folder(dest.parent)
        part = part_path(dest)
        _transfer(url, part, expected_size, progress, cancel, timeout, chunk_size, attempts, max_bytes)
        _verify_part(part, url, sha256, expected_size)
        return _publish(part, dest, url, sha256, expected_size)


def _dest_lock(dest: Path) -> threading.Lock:
    key = str(dest.absolute())
    with _DEST_LOCKS_GUARD:
        return _DEST_LOCKS.setdefault(key, threading.Lock())


def _check_url(url: str) -> None:
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"cannot download {url!r}: only http:// and https:// addresses are supported")


def _existing(dest: Path, url: str, sha256: str | None, expected_size: int | None) -> Path:
    """dest is already there: keep it if it is the wanted file, never overwrite a different one."""
    from .weights import sha256_of

    if not dest.is_file():
        raise DownloadError(f"{dest} already exists and is not a file; not overwritten")
    size = dest.stat().st_size
    if expected_size is not None and size != expected_size:
        raise DownloadError(
            f"{dest} already exists with a different size ({size} bytes, expected {expected_size}); "
            f"not overwritten. Move it away to download {url} again."
        )
    if sha256 is not None:
        actual = sha256_of(dest)
        if actual != sha256:
            raise DownloadError(
                f"{dest} already exists with different content (sha256 {actual}, expected {sha256}); "
                f"not overwritten. Move it away to download {url} again."
            )
    return dest


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the download folder {folder}: {exc.strerror or exc}") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DownloadError(f"the download folder {folder} is not writable")


def _transfer(url, part, expected_size, progress, cancel, timeout, chunk_size, attempts, max_bytes) -> None:
    """Fill part with the whole body, resuming and retrying while each attempt makes progress."""
    resumable = False
    for attempt in range(1, max(1, attempts) + 1):
        before = _size(part)
        try:
            _one_attempt(url, part, expected_size, progress, cancel, timeout, chunk_size, max_bytes)
            return
        except _Interrupted as exc:
            resumable |= exc.resumable
            gained = _size(part) > before
            log.info("download of %s interrupted (attempt %d): %s", url, attempt, exc)
            if not gained or attempt == max(1, attempts):
                _give_up(part, resumable, url, exc)


def _give_up(part: Path, resumable: bool, url: str, exc: Exception):
    # A .part is only worth keeping when the server can continue it with a Range request.
    if not resumable:
        _remove(part)
        raise DownloadError(f"download of {url} failed: {exc}; nothing was kept (the server cannot resume)") from exc
    raise DownloadError(
        f"download of {url} failed: {exc}; the partial file {part} is kept and will be resumed next time"
    ) from exc


def _one_attempt(url, part, expected_size, progress, cancel, timeout, chunk_size, max_bytes) -> None:
    """One HTTP request, appended to part when the server continues it (206), else from scratch."""
    _check_cancel(cancel)
    offset = _size(part)
    if expected_size is not None and offset >= expected_size:
        _remove(part)  # a complete or oversized leftover cannot be continued: start again
        offset = 0
    response = _open(url, offset, timeout)
    with response:
        offset, total, resumed = _plan(response, url, part, offset, expected_size)
        cap = _cap(expected_size, total, max_bytes)
        _copy_body(response, url, part, offset, total, progress, cancel, chunk_size, resumed, cap)


def _cap(expected_size, total, max_bytes) -> int:
    """The most bytes the file may reach: the registry's size, else the server's (+1 % margin), else max_bytes."""
    if expected_size is not None:
        return expected_size
    if total is not None:
        return total + max(total // 100, 1 << 16)
    return max_bytes


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset > 0:
            exc.close()
            return _open(url, 0, timeout)  # the server does not like our offset: from scratch
        raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot reach {url}: {_reason(exc.reason)}") from exc
    except (socket.timeout, TimeoutError) as exc:
        raise DownloadError(f"cannot reach {url}: timed out after {timeout} s") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"cannot reach {url}: {_reason(exc)}") from exc


def _plan(response, url, part, offset, expected_size):
    """Decide where the body goes: (offset to append at, total size or None, resumed?)."""
    status = getattr(response, "status", 200)
    length = _int_header(response, "Content-Length")
    if offset > 0 and status == 206:
        start, total = _content_range(response.headers.get("Content-Range"))
        if start != offset:
            raise DownloadError(f"download of {url} failed: server resumed at byte {start}, asked {offset}")
        if total is None and length is not None:
            total = offset + length
    else:
        offset = 0  # a 200 answer to a Range request: the server restarts, so do we
        total = length
    if expected_size is not None and total is not None and total != expected_size:
        _remove(part)
        raise DownloadError(
            f"download of {url} failed: the server offers {total} bytes, expected {expected_size}"
        )
    return offset, total, status == 206


def _copy_body(response, url, part, offset, total, progress, cancel, chunk_size, resumed, cap) -> None:
    mode = "ab" if offset > 0 else "wb"
    done = offset
    try:
        handle = open(part, mode)
    except OSError as exc:
        raise DownloadError(f"cannot write into the download folder {part.parent}: {exc.strerror or exc}") from exc
    resumable = resumed or _accepts_ranges(response)
    try:
        with handle:
            _report(progress, done, total)
            while True:
                chunk = _read(response, chunk_size, resumable)
                if not chunk:
                    break
                if done + len(chunk) > cap:
                    raise DownloadError(
                        f"download of {url} stopped: the server sent more than {cap} bytes "
                        f"(the most expected); {part} deleted"
                    )
                _write(handle, chunk, part)
                done += len(chunk)
                _report(progress, done, total)
                if cancel is not None and cancel():
                    raise CancelledError(f"download of {url} cancelled; {_part_fate(part, resumable)}")
    except _Interrupted:
        raise  # the caller retries or gives up, knowing whether the part can be resumed
    except BaseException as exc:  # cancel, Ctrl-C, SIGTERM, a full disk, the cap
        if not resumable or not isinstance(exc, (CancelledError, KeyboardInterrupt)):
            _remove(part)
        raise
    if total is not None and done < total:
        raise _Interrupted(f"connection closed after {done} of {total} bytes", resumable)


def _part_fate(part: Path, resumable: bool) -> str:
    if resumable:
        return f"{part} is kept to resume later"
    return f"{part} deleted (the server cannot resume a download)"


def _read(response, chunk_size: int, resumable: bool) -> bytes:
    try:
        return response.read(chunk_size)
    except _TRANSIENT as exc:
        raise _Interrupted(_reason(exc), resumable) from exc


def _write(handle, chunk: bytes, part: Path) -> None:
    try:
        handle.write(chunk)
    except OSError as exc:
        raise DownloadError(f"cannot write {part}: {exc.strerror or exc}") from exc


def _verify_part(part: Path, url: str, sha256: str | None, expected_size: int | None) -> None:
    """Size and checksum before the rename; a bad file is deleted, never published."""
    from .weights import sha256_of

    size = _size(part)
    if expected_size is not None and size != expected_size:
        _remove(part)
        raise DownloadError(f"download of {url} has {size} bytes, expected {expected_size}; deleted")
    if sha256 is None:
        log.warning("no checksum known for %s: the download is not verified", url)
        return
    actual = sha256_of(part)
    if actual != sha256:
        _remove(part)
        raise DownloadError(
            f"download of {url} failed its checksum (sha256 {actual}, expected {sha256}); deleted"
        )


def _publish(part: Path, dest: Path, url: str, sha256: str | None, expected_size: int | None) -> Path:
    # Someone else may have finished the same download meanwhile: same rules as at the start.
    if dest.exists():
        try:
            return _existing(dest, url, sha256, expected_size)
        finally:
            _remove(part)
    try:
        os.replace(part, dest)
    except OSError as exc:
        _remove(part)
        raise DownloadError(f"cannot move the download to {dest}: {exc.strerror or exc}") from exc
    return dest


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """'bytes 100-199/1000' -> (100, 1000); a '*' total -> None."""
    try:
        unit, _, spec = value.strip().partition(" ")
        span, _, total = spec.partition("/")
        start = int(span.split("-")[0])
        return start, (None if total.strip() == "*" else int(total))
    except (AttributeError, ValueError):
        return None, None


def _int_header(response, name: str) -> int | None:
    try:
        return int(response.headers.get(name))
    except (TypeError, ValueError):
        return None


def _accepts_ranges(response) -> bool:
    return (response.headers.get("Accept-Ranges") or "").strip().lower() == "bytes"


def _check_cancel(cancel: CancelFn | None) -> None:
    if cancel is not None and cancel():
        raise CancelledError("download cancelled")


def _report(progress: ProgressFn | None, done: int, total: int | None) -> None:
    if progress is not None:
        progress(done, total)


def _reason(exc) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
