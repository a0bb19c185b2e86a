"""The manifest's `add_box_ijk` column (added key-slice boxes, `;` between boxes) on a real case:
the same mask as `segment --add-box-ijk` bit for bit, part of the fingerprint (a changed added box
redoes that row only), and a malformed or thick added box fails only its row, before any model
work on it, with nothing written for it."""

import json

import numpy as np

from cli_support import call
from test_batch import ABDOMEN, KIDNEY_BOX, box_text, mask, no_temporaries, report, write_manifest

COLUMNS = ["image", "box_ijk", "name", "add_box_ijk", "output"]
ONE_ADDED = "73 50 7 87 62 7"  # the kidney box on one more slice above the first box (slices 4..6)
TWO_ADDED = "73 50 3 87 62 3; 74 51 7 86 61 7"


def _manifest(path, rows):
    return write_manifest(path, rows, COLUMNS)


def _rows(second_added):
    return [
        {"image": "abdomen.nii.gz", "box_ijk": box_text(KIDNEY_BOX), "name": "one", "add_box_ijk": ONE_ADDED,
         "output": "one.nii.gz"},
        {"image": "abdomen.nii.gz", "box_ijk": box_text(KIDNEY_BOX), "name": "two", "add_box_ijk": second_added,
         "output": "two.nii.gz"},
        {"image": "abdomen.nii.gz", "box_ijk": box_text(KIDNEY_BOX), "name": "five_numbers",
         "add_box_ijk": "73 50 7 87 62", "output": "five.nii.gz"},
        {"image": "abdomen.nii.gz", "box_ijk": box_text(KIDNEY_BOX), "name": "thick",
         "add_box_ijk": f"{ONE_ADDED}; 73 50 8 87 62 9", "output": "thick.nii.gz"},
        {"image": "abdomen.nii.gz", "box_ijk": box_text(KIDNEY_BOX), "name": "outside",
         "add_box_ijk": "73 50 99 87 62 99", "output": "outside.nii.gz"},
    ]


def _fingerprint(out, name):
    from MedSAMSegmentLib.batch import ledger

    return ledger.read_record(str(out), str(out / name))["fingerprint"]


def test_added_boxes_match_segment_and_are_part_of_the_fingerprint(tmp_path, cases_dir, capsys, monkeypatch):
    folder = tmp_path / "cohort"
    folder.mkdir()
    (folder / "abdomen.nii.gz").symlink_to(ABDOMEN / "image.nii.gz")
    out = tmp_path / "out"
    manifest = _manifest(folder / "cohort.csv", _rows(TWO_ADDED))

    status, stdout, _ = call(capsys, "batch", manifest, "--output-dir", out, "--device", "cpu")
    assert status == 3, stdout
    rows = report(out)
    assert [rows[n]["status"] for n in range(1, 6)] == ["done", "done", "failed", "failed", "failed"]
    assert "add_box_ijk 1" in rows[3]["reason"] and "6 numbers" in rows[3]["reason"]
    assert "add_box_ijk 2 (73 50 8 87 62 9)" in rows[4]["reason"] and "one slice thick" in rows[4]["reason"]
    assert "add_box_ijk 1" in rows[5]["reason"] and "not inside the volume" in rows[5]["reason"]
    for n in (3, 4, 5):
        assert "\n" not in rows[n]["reason"] and rows[n]["seconds"] == ""  # failed before any model work
        assert not (out / _rows(TWO_ADDED)[n - 1]["output"]).exists()
    assert sorted(p.name for p in out.iterdir()) == [".medsam-batch", "one.nii.gz", "report.csv", "report.json",
                                                     "two.nii.gz"]
    assert len(list((out / ".medsam-batch").iterdir())) == 2  # no record of the failed rows either
    assert "row 4 (thick): add_box_ijk 2" in stdout

    # The same boxes through `segment` give the same mask, bit for bit. `segment` gets the predictor the
    # batch loaded in this process (the same model and options; its embedding cache saves re-encoding).
    from MedSAMSegmentLib.batch import worker_state

    options = worker_state.EngineOptions(device="cpu", checkpoint_model="litemedsam")  # as the batch had them
    loaded = worker_state.predictor("litemedsam", options)
    monkeypatch.setattr("MedSAMSegmentLib.engine.predictor.Predictor", lambda *a, **k: loaded)
    for row, added in ((1, [ONE_ADDED]), (2, TWO_ADDED.split(";"))):
        single = tmp_path / f"segment{row}.nii.gz"
        options = [word for box in added for word in ["--add-box-ijk", *box.split()]]
        status, _, err = call(capsys, "segment", ABDOMEN / "image.nii.gz", "--box-ijk", *KIDNEY_BOX, *options,
                              "--device", "cpu", "--quiet", "-o", single)
        assert status == 0, err
        assert np.array_equal(mask(single), mask(out / f"{'one' if row == 1 else 'two'}.nii.gz")), row
    assert not np.array_equal(mask(out / "one.nii.gz"), mask(out / "two.nii.gz"))  # the added boxes matter

    # A changed added box changes the row's fingerprint: a re-run redoes that row only.
    before = {name: (out / name).read_bytes() for name in ("one.nii.gz", "two.nii.gz")}
    fingerprint = _fingerprint(out, "two.nii.gz")
    _manifest(manifest, _rows("73 50 3 87 62 3; 73 50 7 87 62 7"))
    status, stdout, _ = call(capsys, "batch", manifest, "--output-dir", out, "--device", "cpu", "--quiet")
    assert status == 3, stdout
    rows = report(out)
    assert [rows[n]["status"] for n in range(1, 6)] == ["skipped", "done", "failed", "failed", "failed"]
    assert _fingerprint(out, "two.nii.gz") != fingerprint
    assert (out / "one.nii.gz").read_bytes() == before["one.nii.gz"]
    assert no_temporaries(out) == []


def test_added_boxes_in_json_lines_and_csv_are_the_same_row(tmp_path):
    from MedSAMSegmentLib.batch.manifest import load_manifest

    csv_path = _manifest(tmp_path / "m.csv", _rows(TWO_ADDED)[:2])
    jsonl = tmp_path / "m.jsonl"
    with open(jsonl, "w") as f:
        for row in _rows(TWO_ADDED)[:2]:
            boxes = [[int(v) for v in box.split()] for box in row["add_box_ijk"].split(";")]
            f.write(json.dumps(dict(row, box_ijk=list(KIDNEY_BOX), add_box_ijk=boxes)) + "\n")
    from_csv, from_json = load_manifest(csv_path, tmp_path / "out"), load_manifest(jsonl, tmp_path / "out")
    assert [r.add_boxes for r in from_csv] == [r.add_boxes for r in from_json]
    assert from_csv[1].add_boxes == ((73, 50, 3, 87, 62, 3), (74, 51, 7, 86, 61, 7))
    assert from_csv[1].parameters() == from_json[1].parameters() and from_csv[1].error is None
