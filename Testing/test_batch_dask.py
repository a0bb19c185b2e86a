"""The Dask paths, each against one run of the same manifest in this process (shared by the tests):
- `--dask-local 2`: a LocalCluster of 2 worker processes, one of them killed (SIGKILL) while the
  batch runs, still gives every row, with masks identical to the run here;
- `--scheduler ADDRESS`: an existing cluster (the user's) gets the work, gives the same masks, and is
  still running afterwards, each worker having loaded the model once; a scheduler that cannot be
  reached is a one-line error (exit 2), with nothing written."""

import json
import os
import threading
import time

import numpy as np
import pytest

from cli_support import assert_one_line_error, call
from test_batch import ABDOMEN, GALLBLADDER_BOX, KIDNEY_BOX, TUMOUR_BOX, box_text, mask, no_temporaries, write_manifest

CORD = (20, 27, 26, 32, 34, 28)


def _workers():
    import psutil

    found = []
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def _kill_a_busy_worker(records, done, killed):
    """Once a first output is being recorded, SIGKILL the worker that is computing right now."""
    import psutil

    while not done.is_set() and not any(records.glob("*.json")):
        time.sleep(0.05)
    if done.is_set():
        return
    workers = _workers()
    for worker in workers:
        worker.cpu_percent(None)
    time.sleep(0.3)
    busiest = max(workers, key=lambda w: w.cpu_percent(None), default=None)
    if busiest is not None:
        try:
            busiest.kill()
            killed.append(busiest.pid)
        except psutil.Error:
            pass


@pytest.fixture(scope="module")
def cohort_run_here(tmp_path_factory, cases_dir):
    """(manifest, rows, folder of the outputs of a run in this process) for 4 rows on 3 images."""
    pytest.importorskip("distributed")
    from MedSAMSegmentLib.batch import run_batch

    folder = tmp_path_factory.mktemp("dask_cohort")
    rows = [
        {"image": str(cases_dir / "mr_brain1_tumor" / "image.nii.gz"), "box_ijk": box_text(TUMOUR_BOX), "name": "tumour",
         "output": "tumour.nii.gz"},
        {"image": str(ABDOMEN / "image.nii.gz"), "box_ijk": box_text(KIDNEY_BOX), "name": "kidney", "output": "kidney.nii.gz"},
        {"image": str(ABDOMEN / "image.nii.gz"), "box_ijk": box_text(GALLBLADDER_BOX), "name": "gb", "output": "gb.nii.gz"},
        {"image": str(cases_dir / "mr_cspine_t2_cord" / "image.nii.gz"), "box_ijk": box_text(CORD), "name": "cord",
         "output": "cord.nii.gz"},
    ]
    manifest = write_manifest(folder / "cohort.csv", rows)
    local = run_batch(manifest, folder / "local", device="cpu", threads=1)
    assert local.exit_status == 0
    return manifest, rows, folder / "local"


def test_local_cluster_with_a_worker_killed_mid_batch_completes(cohort_run_here, tmp_path):
    pytest.importorskip("psutil")
    from MedSAMSegmentLib.batch import run_batch

    manifest, rows, local = cohort_run_here
    out = tmp_path / "dask"
    done, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_a_busy_worker, args=(out / ".medsam-batch", done, killed), daemon=True)
    killer.start()
    try:
        result = run_batch(manifest, out, device="cpu", dask_local=2)
    finally:
        done.set()
        killer.join(timeout=10)
    assert killed, "no worker was killed while the batch ran"
    assert result.exit_status == 0, [(line["name"], line["status"], line.get("reason")) for line in result.rows]
    assert [line["status"] for line in result.rows] == ["done"] * 4
    for row in rows:
        assert np.array_equal(mask(out / row["output"]), mask(local / row["output"])), row["name"]
    assert no_temporaries(out) == []


def _models_loaded():
    from MedSAMSegmentLib.batch import worker_state

    return worker_state.loaded_models()


def test_an_existing_scheduler_gets_the_work_and_its_cluster_keeps_running(cohort_run_here, tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    manifest, rows, local = cohort_run_here
    out = tmp_path / "scheduler"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        status, stdout, err = call(capsys, "batch", manifest, "--output-dir", out, "--scheduler",
                                   cluster.scheduler_address, "--device", "cpu", "--quiet")
        assert status == 0, stdout + err
        # The batch's client closed itself, not the user's cluster: its workers are there and take work.
        assert cluster.status.name == "running"
        with distributed.Client(cluster) as client:
            assert len(client.scheduler_info()["workers"]) == 2
            assert client.submit(sum, [1, 2]).result() == 3
            loaded = client.run(_models_loaded)
        assert sorted(loaded.values()) in ([0, 1], [1, 1])  # each worker loaded the model at most once
    with open(out / "report.json") as f:
        assert [line["status"] for line in json.load(f)["rows"]] == ["done"] * 4
    for row in rows:
        assert np.array_equal(mask(out / row["output"]), mask(local / row["output"])), row["name"]
    assert no_temporaries(out) == []


def test_a_scheduler_that_cannot_be_reached_is_a_one_line_error(tmp_path, cases_dir, capsys):
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    manifest = write_manifest(tmp_path / "cohort.csv", [
        {"image": str(ABDOMEN / "image.nii.gz"), "box_ijk": box_text(KIDNEY_BOX), "name": "kidney"}])
    out = tmp_path / "out"
    for address, reason in ((f"tcp://127.0.0.1:{port}", "Timed out trying to connect"),
                            ("nonsense://host:1", "unknown address scheme")):
        with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
            status, _, err = call(capsys, "batch", manifest, "-o", out, "--scheduler", address, "--quiet")
        assert status == 2 and f"cannot use the Dask scheduler {address}" in err and reason in err, err
        assert_one_line_error(err)
        assert list(out.iterdir()) == []  # no output, no record, no report
