"""`medsam-segment batch` on real cases: bad rows fail alone, outputs that are inputs are refused,
rows on one image share its embeddings, a run killed by SIGTERM resumes, a changed row is redone.

Rows cover three slices each, so the real LiteMedSAM runs a few seconds per test."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cli_support import assert_one_line_error, call
from conftest import CASES_DIR

LIB_DIR = Path(__file__).resolve().parent.parent / "MedSAMSegment"
BRAIN = CASES_DIR / "mr_brain1_tumor"
ABDOMEN = CASES_DIR / "mr_abdomen_totalseg"
TUMOUR_BOX = (189, 144, 13, 208, 160, 15)
KIDNEY_BOX = (73, 50, 4, 87, 62, 6)
GALLBLADDER_BOX = (26, 20, 6, 39, 37, 8)
COLUMNS = ["image", "box_ijk", "roi", "name", "modality", "output", "label", "label_value"]


def box_text(box):
    return " ".join(map(str, box))


def write_manifest(path, rows, columns=COLUMNS):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return path


def report(folder):
    with open(Path(folder) / "report.csv", newline="") as f:
        return {int(r["row"]): r for r in csv.DictReader(f)}


def mask(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def roi_around(image_path, box, path):
    """A Slicer ROI file whose voxel-centre box is exactly `box` (index axes = ROI axes)."""
    from MedSAMSegmentLib.fileio.imageio import read_image
    from MedSAMSegmentLib.fileio.markups import write_roi_json

    image = read_image(image_path)
    m = image.ijk_to_ras
    lo, hi = np.array(box[:3], float), np.array(box[3:], float)
    centre = m[:3, :3] @ ((lo + hi) / 2) + m[:3, 3]
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    object_to_ras = np.eye(4)
    object_to_ras[:3, :3] = m[:3, :3] / spacing
    object_to_ras[:3, 3] = centre
    write_roi_json(path, object_to_ras, (hi - lo + 0.5) * spacing)
    return path


def finished_rows(folder):
    """Outputs whose batch record says 'done' (written and recorded)."""
    done = []
    for record in (Path(folder) / ".medsam-batch").glob("*.json"):
        try:
            document = json.loads(record.read_text())
        except (OSError, ValueError):  # being replaced right now
            continue
        if document.get("state") == "done":
            done.append(document["output"])
    return done


def no_temporaries(folder):
    return [p.name for p in Path(folder).rglob("*") if ".part" in p.name]


@pytest.fixture
def cohort(tmp_path, cases_dir):
    """A manifest folder holding links to the cases (relative paths, as a cohort would be)."""
    folder = tmp_path / "cohort"
    folder.mkdir()
    (folder / "brain.nii.gz").symlink_to(BRAIN / "image.nii.gz")
    (folder / "abdomen.nii.gz").symlink_to(ABDOMEN / "image.nii.gz")
    return folder


def test_real_rows_run_and_bad_rows_fail_alone_with_their_reason(cohort, tmp_path, capsys):
    from MedSAMSegmentLib.batch import worker_state

    out = tmp_path / "out"
    out.mkdir()
    label_copy = cohort / "abdomen_label.nii.gz"
    label_copy.write_bytes((ABDOMEN / "label.nii.gz").read_bytes())
    os.link(label_copy, out / "hardlinked.nii.gz")  # an existing output that is an input by another name
    roi_around(cohort / "brain.nii.gz", TUMOUR_BOX, cohort / "tumour.mrk.json")
    (cohort / "broken.mrk.json").write_text('{"markups": [{"type": "ROI", "center": [1, 2]')
    manifest = write_manifest(cohort / "cohort.csv", [
        {"image": "brain.nii.gz", "box_ijk": box_text(TUMOUR_BOX), "name": "tumour", "modality": "MR",
         "label": str(BRAIN / "label.nii.gz")},
        {"image": "brain.nii.gz", "roi": "tumour.mrk.json", "name": "tumour_roi", "modality": "MR", "output": "roi.seg.nrrd"},
        {"image": "abdomen.nii.gz", "box_ijk": box_text(KIDNEY_BOX), "name": "kidney", "modality": "MR",
         "output": "kidney.nii.gz", "label": "abdomen_label.nii.gz", "label_value": "3"},
        {"image": "abdomen.nii.gz", "box_ijk": box_text(GALLBLADDER_BOX), "name": "gallbladder", "output": "gb.nrrd"},
        {"image": "missing.nii.gz", "box_ijk": "1 1 1 5 5 5", "name": "missing"},
        {"image": "brain.nii.gz", "box_ijk": "300 300 1 320 320 3", "name": "outside"},
        {"image": "brain.nii.gz", "roi": "broken.mrk.json", "name": "broken_roi"},
        {"image": "brain.nii.gz", "box_ijk": box_text(TUMOUR_BOX), "name": "onto_image", "output": "../cohort/./brain.nii.gz"},
        {"image": "abdomen.nii.gz", "box_ijk": box_text(KIDNEY_BOX), "name": "onto_label", "output": "hardlinked.nii.gz"},
    ])
    image_bytes = (BRAIN / "image.nii.gz").read_bytes()
    status, stdout, _ = call(capsys, "batch", manifest, "--output-dir", out, "--device", "cpu")
    assert status == 3, stdout
    rows = report(out)
    assert [rows[n]["status"] for n in range(1, 10)] == ["done"] * 4 + ["failed"] * 5
    assert "image file not found" in rows[5]["reason"]
    assert "outside the volume" in rows[6]["reason"]
    assert "broken.mrk.json" in rows[7]["reason"]
    assert "the image of row 1" in rows[8]["reason"] and "refusing" in rows[8]["reason"]
    assert "the label of row 3" in rows[9]["reason"]
    assert "9 rows: 4 done, 0 up to date, 5 failed" in stdout
    # The inputs are untouched, the good rows' outputs are complete, nothing temporary is left.
    assert (BRAIN / "image.nii.gz").read_bytes() == image_bytes
    assert (out / "hardlinked.nii.gz").read_bytes() == label_copy.read_bytes()
    assert no_temporaries(out) == []
    tumour = mask(rows[1]["output"])
    assert tumour.sum() == int(rows[1]["voxels"]) > 0
    assert np.array_equal(tumour, mask(out / "roi.seg.nrrd"))  # the ROI selects the same box
    from MedSAMSegmentLib.engine.metrics import dice

    assert float(rows[1]["dice"]) == pytest.approx(dice(tumour, mask(BRAIN / "label.nii.gz") == 1), abs=1e-6)
    assert float(rows[3]["dice"]) == pytest.approx(dice(mask(out / "kidney.nii.gz"), mask(label_copy) == 3), abs=1e-6)
    assert mask(out / "kidney.nii.gz").sum() > 0 and mask(out / "gb.nrrd").sum() > 0
    payload = json.loads((out / "report.json").read_text())
    assert payload["summary"]["failed"] == 5 and len(payload["rows"]) == 9
    # One image read and one embedding per slice: the ROI row re-uses the box row's slices,
    # the two abdomen rows share slice 6.
    (predictor,) = worker_state._PREDICTORS.values()
    segmented = sum(int(rows[n]["segmented"]) for n in range(1, 5))
    assert predictor.encoded <= 3 + 5 < segmented


def test_an_unusable_manifest_stops_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    cases = [("image,name\nx.nii.gz,a\n", "'box_ijk' or a 'roi' column"),
             ("name,box_ijk\na,1 2 3 4 5 6\n", "'image' is missing"),
             ("image,box_ijk,colour\nx.nii.gz,1 2 3 4 5 6,red\n", "unknown column(s) colour"),
             ("image,box_ijk,output\nx,1 1 1 5 5 5,a.nii.gz\ny,1 1 1 5 5 5,a.nii.gz\n", "write the same output"),
             ('{"image": "x.nii.gz", "box_ijk": [1, 2, 3, 4, 5, 6]}\n{"image": \n', "line 2: not JSON")]
    for number, (text, reason) in enumerate(cases):
        manifest = tmp_path / f"m{number}.{'jsonl' if text.startswith('{') else 'csv'}"
        manifest.write_text(text)
        status, _, err = call(capsys, "batch", manifest, "--output-dir", out)
        assert status == 2 and reason in err, err
        assert_one_line_error(err)
    status, _, err = call(capsys, "batch", tmp_path / "absent.csv", "--output-dir", out)
    assert status == 2 and "cannot read manifest" in err
    assert not out.exists()  # nothing was created, no model was loaded


def test_sigterm_leaves_nothing_partial_and_a_rerun_resumes(cohort, tmp_path):
    from MedSAMSegmentLib.batch import run_batch

    out = tmp_path / "out"
    manifest = write_manifest(cohort / "cohort.csv", [
        {"image": "brain.nii.gz", "box_ijk": box_text(TUMOUR_BOX), "name": "tumour", "modality": "MR"},
        {"image": "abdomen.nii.gz", "box_ijk": box_text(KIDNEY_BOX), "name": "kidney", "output": "kidney.nii.gz"},
        {"image": "abdomen.nii.gz", "box_ijk": box_text(GALLBLADDER_BOX), "name": "gb", "output": "gb.nii.gz"},
    ])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(LIB_DIR), os.environ.get("PYTHONPATH", "")]))
    code = "import sys\nfrom MedSAMSegmentLib.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    child = subprocess.Popen([sys.executable, "-c", code, "batch", str(manifest), "-o", str(out), "--device", "cpu", "-q"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not finished_rows(out) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)  # the first row is written and recorded, the abdomen rows are not
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stdout + stderr
    first = report(out)
    assert first[1]["status"] == "done" and {first[2]["status"], first[3]["status"]} <= {"done", "not run"}
    assert "not run" in (first[2]["status"], first[3]["status"])
    assert no_temporaries(out) == []
    written = {n: Path(first[n]["output"]).read_bytes() for n in first if first[n]["status"] == "done"}

    again = run_batch(manifest, out, device="cpu")
    assert again.exit_status == 0
    statuses = {line["row"]: line["status"] for line in again.rows}
    assert all(statuses[n] == "skipped" for n in written) and statuses[3] == "done"
    assert all(Path(first[n]["output"]).read_bytes() == data for n, data in written.items())  # not rewritten


def test_a_changed_row_is_redone_and_a_foreign_file_is_never_replaced(cohort, tmp_path):
    from MedSAMSegmentLib.batch import run_batch

    out = tmp_path / "out"
    rows = [{"image": "abdomen.nii.gz", "box_ijk": box_text(KIDNEY_BOX), "name": "kidney", "output": "kidney.nii.gz"},
            {"image": "abdomen.nii.gz", "box_ijk": box_text(GALLBLADDER_BOX), "name": "gb", "output": "gb.seg.nrrd"}]
    manifest = write_manifest(cohort / "cohort.csv", rows)
    assert run_batch(manifest, out, device="cpu").exit_status == 0
    before = {name: (out / name).read_bytes() for name in ("kidney.nii.gz", "gb.seg.nrrd")}
    (cohort / "kidney_before.nii.gz").write_bytes(before["kidney.nii.gz"])

    rows[1]["box_ijk"] = box_text(GALLBLADDER_BOX[:5] + (7,))  # one slice less
    write_manifest(manifest, rows)
    result = run_batch(manifest, out, device="cpu")
    assert [line["status"] for line in result.rows] == ["skipped", "done"]
    assert result.rows[1]["segmented"] <= 2 and (out / "gb.seg.nrrd").read_bytes() != before["gb.seg.nrrd"]
    assert (out / "kidney.nii.gz").read_bytes() == before["kidney.nii.gz"]
    assert b"MedSAMSegment.BatchFingerprint" in (out / "gb.seg.nrrd").read_bytes()

    (out / "kidney.nii.gz").write_bytes((ABDOMEN / "label.nii.gz").read_bytes())  # someone else's file now
    result = run_batch(manifest, out, device="cpu")
    assert result.exit_status == 3 and "--overwrite" in result.rows[0]["reason"]
    assert (out / "kidney.nii.gz").read_bytes() == (ABDOMEN / "label.nii.gz").read_bytes()
    result = run_batch(manifest, out, device="cpu", overwrite=True)
    assert [line["status"] for line in result.rows] == ["done", "done"]
    assert np.array_equal(mask(out / "kidney.nii.gz"), mask(cohort / "kidney_before.nii.gz"))
