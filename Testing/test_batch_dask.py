"""The Dask path: a LocalCluster of 2 worker processes, one of them killed (SIGKILL) while the
batch runs, still gives every row, with masks identical to a run in this process."""

import os
import threading
import time

import numpy as np
import pytest

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


def test_local_cluster_with_a_worker_killed_mid_batch_completes(tmp_path, cases_dir):
    pytest.importorskip("distributed")
    pytest.importorskip("psutil")
    from MedSAMSegmentLib.batch import run_batch

    folder = tmp_path / "cohort"
    folder.mkdir()
    rows = [
        {"image": str(cases_dir / "mr_brain1_tumor" / "image.nii.gz"), "box_ijk": box_text(TUMOUR_BOX), "name": "tumour",
         "output": "tumour.nii.gz"},
        {"image": str(ABDOMEN / "image.nii.gz"), "box_ijk": box_text(KIDNEY_BOX), "name": "kidney", "output": "kidney.nii.gz"},
        {"image": str(ABDOMEN / "image.nii.gz"), "box_ijk": box_text(GALLBLADDER_BOX), "name": "gb", "output": "gb.nii.gz"},
        {"image": str(cases_dir / "mr_cspine_t2_cord" / "image.nii.gz"), "box_ijk": box_text(CORD), "name": "cord",
         "output": "cord.nii.gz"},
    ]
    manifest = write_manifest(folder / "cohort.csv", rows)
    local = run_batch(manifest, tmp_path / "local", device="cpu", threads=1)
    assert local.exit_status == 0

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
        assert np.array_equal(mask(out / row["output"]), mask(tmp_path / "local" / row["output"])), row["name"]
    assert no_temporaries(out) == []
