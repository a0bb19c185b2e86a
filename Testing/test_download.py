"""download(): real HTTP on 127.0.0.1 with Range, dropped connections, wrong bytes and errors."""

import hashlib
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MedSAMSegment"))

from helpers_http import LocalServer  # noqa: E402
from MedSAMSegmentLib.errors import CancelledError, DownloadError, WeightsError  # noqa: E402
from MedSAMSegmentLib.model.download import download, part_path  # noqa: E402

SIZE = 300_000
CHUNK = 16_384


@pytest.fixture
def data():
    return os.urandom(SIZE)


@pytest.fixture
def server():
    with LocalServer() as running:
        yield running


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_with_checksum_writes_the_file_atomically(server, data, tmp_path):
    url = server.add("/w.pth", data)
    dest = tmp_path / "w.pth"
    seen = []
    got = download(url, dest, sha256=sha(data), expected_size=SIZE, progress=lambda d, t: seen.append((d, t)),
                   chunk_size=CHUNK)
    assert got == dest
    assert dest.read_bytes() == data
    assert not part_path(dest).exists()
    assert server.requests[0].range is None and len(server.requests) == 1
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[0] == 0 and done[-1] == SIZE
    assert {t for _, t in seen} == {SIZE}


def test_creates_missing_parent_folders(server, data, tmp_path):
    url = server.add("/w.pth", data)
    dest = tmp_path / "a" / "b" / "w.pth"
    download(url, dest, sha256=sha(data))
    assert dest.read_bytes() == data


def test_dropped_connection_is_resumed_with_a_range_request(server, data, tmp_path):
    url = server.add("/w.pth", data, drop_at=100_000, drops=1)
    dest = tmp_path / "w.pth"
    download(url, dest, sha256=sha(data), expected_size=SIZE, chunk_size=CHUNK)
    assert dest.read_bytes() == data
    assert [r.range for r in server.requests] == [None, "bytes=100000-"]


def test_partial_file_is_kept_and_resumed_by_the_next_call(server, data, tmp_path):
    url = server.add("/w.pth", data, drop_at=120_000, drops=1)
    dest = tmp_path / "w.pth"
    with pytest.raises(DownloadError, match="resumed next time"):
        download(url, dest, sha256=sha(data), chunk_size=CHUNK, attempts=1)
    assert not dest.exists()
    assert part_path(dest).read_bytes() == data[:120_000]

    download(url, dest, sha256=sha(data), chunk_size=CHUNK, attempts=1)
    assert dest.read_bytes() == data
    assert server.requests[-1].range == "bytes=120000-"
    assert not part_path(dest).exists()


def test_server_ignoring_range_restarts_from_scratch(server, data, tmp_path):
    url = server.add("/w.pth", data, ranges=False)
    dest = tmp_path / "w.pth"
    part_path(dest).write_bytes(b"stale bytes of some other file")
    download(url, dest, sha256=sha(data), chunk_size=CHUNK)
    assert dest.read_bytes() == data
    assert server.requests[0].range == "bytes=30-"


def test_unsatisfiable_range_restarts_from_scratch(server, data, tmp_path):
    url = server.add("/w.pth", data)
    dest = tmp_path / "w.pth"
    part_path(dest).write_bytes(b"x" * (SIZE + 10))  # longer than the file: server answers 416
    download(url, dest, sha256=sha(data))
    assert dest.read_bytes() == data
    assert [r.range for r in server.requests] == [f"bytes={SIZE + 10}-", None]


def test_oversized_leftover_part_is_discarded_without_a_range_request(server, data, tmp_path):
    url = server.add("/w.pth", data)
    dest = tmp_path / "w.pth"
    part_path(dest).write_bytes(b"x" * (SIZE + 10))
    download(url, dest, sha256=sha(data), expected_size=SIZE)
    assert dest.read_bytes() == data
    assert [r.range for r in server.requests] == [None]


def test_existing_folder_under_the_final_name_is_refused(server, data, tmp_path):
    url = server.add("/w.pth", data)
    (tmp_path / "w.pth").mkdir()
    with pytest.raises(DownloadError, match="not a file"):
        download(url, tmp_path / "w.pth")


def test_concurrent_downloads_of_one_file_do_not_mix(server, data, tmp_path):
    url = server.add("/w.pth", data)
    dest = tmp_path / "w.pth"
    results, errors = [], []

    def fetch():
        try:
            results.append(download(url, dest, sha256=sha(data), chunk_size=CHUNK))
        except Exception as exc:  # collected: a failure in a thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and results == [dest] * 4
    assert dest.read_bytes() == data
    assert len(server.requests) == 1  # the others found the finished file


def test_interrupted_without_resume_fails_cleanly(server, data, tmp_path):
    url = server.add("/w.pth", data, ranges=False, drop_at=50_000)  # drops every time, no Range
    dest = tmp_path / "w.pth"
    with pytest.raises(DownloadError, match="50000 of 300000"):
        download(url, dest, sha256=sha(data), chunk_size=CHUNK, attempts=5)
    assert not dest.exists()
    assert not part_path(dest).exists()
    assert len(server.requests) == 2  # the retry gained nothing, so it stopped there


def test_wrong_bytes_fail_the_checksum_and_leave_nothing(server, data, tmp_path):
    url = server.add("/w.pth", os.urandom(SIZE))
    dest = tmp_path / "w.pth"
    with pytest.raises(DownloadError, match="checksum") as info:
        download(url, dest, sha256=sha(data), expected_size=SIZE)
    assert sha(data) in str(info.value)
    assert not dest.exists()
    assert not part_path(dest).exists()


def test_wrong_size_offered_by_the_server_is_refused(server, data, tmp_path):
    url = server.add("/w.pth", data[:1000])
    dest = tmp_path / "w.pth"
    with pytest.raises(DownloadError, match=f"offers 1000 bytes, expected {SIZE}"):
        download(url, dest, expected_size=SIZE)
    assert not dest.exists() and not part_path(dest).exists()


def test_existing_different_file_is_never_overwritten(server, data, tmp_path):
    url = server.add("/w.pth", data)
    dest = tmp_path / "w.pth"
    dest.write_bytes(b"my own file")
    with pytest.raises(DownloadError, match="not overwritten"):
        download(url, dest, sha256=sha(data))
    with pytest.raises(DownloadError, match="not overwritten"):
        download(url, dest, expected_size=SIZE)
    assert dest.read_bytes() == b"my own file"
    assert server.requests == []


def test_existing_file_is_reused_without_a_request(server, data, tmp_path):
    url = server.add("/w.pth", data)
    dest = tmp_path / "w.pth"
    dest.write_bytes(data)
    assert download(url, dest, sha256=sha(data)) == dest
    assert download(url, dest) == dest  # no checksum known: the existing file is taken as is
    assert server.requests == []


def test_cancel_keeps_the_part_file_for_resume(server, data, tmp_path):
    url = server.add("/w.pth", data)
    dest = tmp_path / "w.pth"
    calls = []
    with pytest.raises(CancelledError):
        download(url, dest, sha256=sha(data), chunk_size=CHUNK, cancel=lambda: calls.append(1) or len(calls) > 3)
    assert not dest.exists()
    kept = part_path(dest).read_bytes()
    assert 0 < len(kept) < SIZE and data.startswith(kept)

    download(url, dest, sha256=sha(data), chunk_size=CHUNK)
    assert dest.read_bytes() == data
    assert server.requests[-1].range == f"bytes={len(kept)}-"


def test_cancel_before_start_sends_nothing(server, data, tmp_path):
    url = server.add("/w.pth", data)
    with pytest.raises(CancelledError):
        download(url, tmp_path / "w.pth", cancel=lambda: True)
    assert server.requests == []


def test_unwritable_folder_is_a_download_error_naming_it(server, data, tmp_path):
    url = server.add("/w.pth", data)
    blocker = tmp_path / "cache"
    blocker.write_bytes(b"a file where the cache folder should be")  # fails even for root
    with pytest.raises(DownloadError, match=str(blocker)):
        download(url, blocker / "models" / "w.pth", sha256=sha(data))
    assert server.requests == []


def test_http_404_names_url_and_status(server, tmp_path):
    url = server.url("/missing.pth")
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "w.pth")
    assert url in str(info.value) and "404" in str(info.value)
    assert not (tmp_path / "w.pth").exists()


def test_connection_refused_names_url(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/w.pth"
    with pytest.raises(DownloadError, match=url):
        download(url, tmp_path / "w.pth", timeout=5)


def test_silent_server_times_out(server, data, tmp_path):
    url = server.add("/w.pth", data, hang=True)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="timed out") as info:
        download(url, tmp_path / "w.pth", timeout=0.3)
    assert url in str(info.value)
    assert time.monotonic() - start < 5


def test_only_http_urls(tmp_path):
    with pytest.raises(DownloadError, match="http"):
        download(f"file://{tmp_path}/x", tmp_path / "w.pth")


def test_download_error_is_a_weights_error():
    assert issubclass(DownloadError, WeightsError)


def test_an_endless_body_is_stopped_at_the_cap_and_deleted(server, tmp_path):
    # No Content-Length and no expected size: only the cap stops a body that never ends.
    url = server.add("/w.pth", os.urandom(200_000), length=False)
    dest = tmp_path / "w.pth"
    with pytest.raises(DownloadError, match="the server sent more than 50000 bytes .*deleted"):
        download(url, dest, sha256="0" * 64, chunk_size=CHUNK, max_bytes=50_000)
    assert os.listdir(tmp_path) == []


def test_a_body_longer_than_the_registry_size_is_stopped(server, data, tmp_path):
    url = server.add("/w.pth", data, length=False)
    with pytest.raises(DownloadError, match="more than 1000 bytes"):
        download(url, tmp_path / "w.pth", sha256=sha(data), expected_size=1000, chunk_size=CHUNK)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("how", ["cancel", "ctrl-c"])
def test_an_interrupted_download_keeps_its_part_only_when_the_server_can_resume(server, data, tmp_path, how):
    for ranges in (False, True):
        url = server.add(f"/{ranges}.pth", data, ranges=ranges)
        dest = tmp_path / f"{ranges}.pth"
        seen = []

        def stop_after_a_few_chunks(done, total):
            seen.append(done)
            if how == "ctrl-c" and len(seen) > 3:
                raise KeyboardInterrupt

        options = {"progress": stop_after_a_few_chunks}
        if how == "cancel":
            options["cancel"] = lambda: len(seen) > 3
        with pytest.raises(CancelledError if how == "cancel" else KeyboardInterrupt) as info:
            download(url, dest, sha256=sha(data), chunk_size=CHUNK, **options)
        assert part_path(dest).exists() == ranges and not dest.exists()
        if how == "cancel":
            fate = "is kept to resume later" if ranges else "deleted (the server cannot resume a download)"
            assert str(info.value).endswith(f"{part_path(dest)} {fate}")
