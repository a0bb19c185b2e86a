"""Key-slice boxes (key_boxes.py): one box unchanged, a second box recovers what one box cannot
follow, adding a box re-runs only what it can change, bad added boxes are refused before any work.

Real LiteMedSAM (engine_support.shared_predictor); the synthetic volume is 9 slices of 96 x 96, the
brain tumour 7 slices, so the encoder runs on 16 slices in all and the rest is decoder work.
"""

import numpy as np
import pytest

from cli_support import assert_one_line_error, call
from engine_support import dice, load_case, shared_predictor
from MedSAMSegmentLib.engine.intensity import auto_window, explicit_window
from MedSAMSegmentLib.engine.key_boxes import added_boxes_from_index_boxes
from MedSAMSegmentLib.engine.propagation import MODES, segment_volume
from MedSAMSegmentLib.engine.slicing import key_slice_box
from MedSAMSegmentLib.errors import InputError

BRAIN_BOX = (189, 144, 11, 208, 160, 17)  # the reference box of ../shared (summary.json)
MOVED_AT = 5  # the synthetic disc jumps out of the first box on this slice
FIRST_BOX = (16, 16, 0, 44, 44, 8)  # around the disc on slices 0..4; key slice 2
SECOND_BOX_2D = (52, 52, 80, 80)  # around the disc on slices 5..8


def moving_disc():
    """(volume, truth): a bright disc on noise that jumps from (30, 30) to (66, 66) on slice 5."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    volume = rng.normal(40, 8, (9, 96, 96)).astype(np.float32)
    truth = np.zeros(volume.shape, np.uint8)
    for k in range(9):
        cy, cx = (30, 30) if k < MOVED_AT else (66, 66)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 12**2
        volume[k][disc] += 160
        truth[k][disc] = 1
    return volume, truth


def same_result(a, b):
    assert np.array_equal(a.mask, b.mask)
    assert a.slices == b.slices
    assert all(np.array_equal(x, y) for x, y in zip(a.boxes, b.boxes))


@pytest.mark.parametrize("mode", MODES)
def test_one_box_is_unchanged_bit_for_bit(mode):
    predictor = shared_predictor()
    image, _ = load_case("mr_brain1_tumor")
    window = auto_window(image, modality="MR")
    one = segment_volume(predictor, image, window, BRAIN_BOX, mode=mode)
    assert one.key_slices == [14] and set(one.from_key.values()) == {14}
    # The key-box path with the first box repeated as an added box on its key slice: the same calls.
    again = segment_volume(predictor, image, window, BRAIN_BOX, mode=mode, add_boxes=[(14, (189, 144, 208, 160))])
    same_result(one, again)
    assert again.stop_reasons == {"up from 14": one.stop_reasons["up"], "down from 14": one.stop_reasons["down"]}
    for empty in ([], None, ()):
        same_result(one, segment_volume(predictor, image, window, BRAIN_BOX, mode=mode, add_boxes=empty))
    # Nothing to change: previous= re-uses every slice and calls no decoder.
    reused = segment_volume(predictor, image, window, BRAIN_BOX, mode=mode, previous=one)
    assert np.array_equal(reused.mask, one.mask) and reused.slices == []


@pytest.mark.parametrize("mode", MODES)
def test_second_box_recovers_an_object_that_left_the_first_box(mode):
    predictor = shared_predictor()
    volume, truth = moving_disc()
    window = explicit_window(volume, 120, 240)
    one = segment_volume(predictor, volume, window, FIRST_BOX, key_slice=2, mode=mode)
    assert dice(one.mask[:MOVED_AT], truth[:MOVED_AT]) > 0.95
    assert dice(one.mask[MOVED_AT:], truth[MOVED_AT:]) < 0.2  # one box cannot follow the jump

    two = segment_volume(predictor, volume, window, FIRST_BOX, key_slice=2, mode=mode,
                         add_boxes=[(7, SECOND_BOX_2D)], previous=one)
    for k in range(9):
        assert dice(two.mask[k], truth[k]) > 0.95, k
    assert two.key_slices == [2, 7] and two.key_boxes[7] == SECOND_BOX_2D
    assert [two.from_key[k] for k in range(9)] == [2] * MOVED_AT + [7] * (9 - MOVED_AT)
    # Only the new key slice's runs were decoded (slices 3..8); slices 0..2 were re-used.
    assert two.slices and set(two.slices) <= set(range(3, 9)) and two.slices[0] == 7
    fresh = segment_volume(predictor, volume, window, FIRST_BOX, key_slice=2, mode=mode, add_boxes=[(7, SECOND_BOX_2D)])
    assert np.array_equal(fresh.mask, two.mask)


@pytest.mark.parametrize("mode", MODES)
def test_an_added_box_that_agrees_with_the_result_changes_only_its_own_slice(mode):
    """A box added where the propagation was already right: its runs rejoin the first box's result
    on the next slice each way, so those slices and every other keep the earlier mask, bit for bit,
    and only the key slice and the two slices where it rejoined were decoded."""
    predictor = shared_predictor()
    volume, truth = moving_disc()
    window = explicit_window(volume, 120, 240)
    one = segment_volume(predictor, volume, window, FIRST_BOX, key_slice=3, mode=mode)
    two = segment_volume(predictor, volume, window, FIRST_BOX, key_slice=3, mode=mode,
                         add_boxes=[(1, (17, 17, 43, 43))], previous=one)
    assert two.key_slices == [1, 3] and two.stop_reasons["down from 1"] == "rejoined the earlier result on slice 0"
    assert two.stop_reasons["up from 1"] == "rejoined the earlier result on slice 2"
    assert sorted(set(two.slices)) == [0, 1, 2] and two.from_key[0] == two.from_key[2] == 3 and two.from_key[1] == 1
    for k in range(9):
        if k != 1:
            assert np.array_equal(two.mask[k], one.mask[k]), k
    assert dice(two.mask[1], truth[1]) > 0.95


def test_added_box_beyond_the_first_box_grows_the_range_to_it():
    predictor = shared_predictor()
    volume, truth = moving_disc()
    window = explicit_window(volume, 120, 240)
    short = (16, 16, 0, 44, 44, 4)  # the first box ends before the disc moves
    res = segment_volume(predictor, volume, window, short, add_boxes=[(6, SECOND_BOX_2D)])
    assert res.key_slices == [2, 6]
    written = [k for k in range(9) if res.mask[k].any()]
    assert written == list(range(7))  # the smallest range holding 0..4 and slice 6: slice 7 and 8 untouched
    assert dice(res.mask[:7], truth[:7]) > 0.95


def test_one_slice_thick_index_boxes():
    shape = (9, 96, 100)  # K, J, I
    assert key_slice_box((52, 50, 7, 80, 81, 7), shape, "k") == (7, (52, 50, 80, 81))
    assert key_slice_box((3, 50, 2, 3, 81, 8), shape, "i") == (3, (50, 2, 81, 8))
    assert key_slice_box((10, 5, 2, 30, 5, 8), shape, "j") == (5, (10, 2, 30, 8))
    bad = {
        (52, 50, 6, 80, 81, 7): "one slice thick along k",
        (52, 50, 9, 80, 81, 9): r"k range \[9, 9\] is not inside the volume \(valid 0..8\)",
        (52, 50, 7, 100, 81, 7): r"i range \[52, 100\] is not inside",
        (-1, 50, 7, 80, 81, 7): "i range",
        (52, 50, 7, 52, 81, 7): "too small",
        (52, 50, 7, 80, 81): "6 numbers",
        (52, 50, 7, 80, 81, float("nan")): "finite",
    }
    for box, message in bad.items():
        with pytest.raises(InputError, match=message):
            key_slice_box(box, shape, "k")
    with pytest.raises(InputError, match=r"added box 2 \(52 50 6 80 81 7\): .*one slice thick"):
        added_boxes_from_index_boxes([(52, 50, 7, 80, 81, 7), (52, 50, 6, 80, 81, 7)], shape, "k")


def test_bad_added_boxes_are_refused_before_any_model_work():
    predictor = shared_predictor()
    volume, _ = moving_disc()
    window = explicit_window(volume, 120, 240)
    encoded = predictor.encoded
    bad = {
        (9, SECOND_BOX_2D): "slice 9 is outside the volume",
        (-1, SECOND_BOX_2D): "slice -1 is outside",
        (7, (52, 52, 52, 80)): "too small or inverted",
        (7, (100, 100, 120, 120)): "outside the slice",
        (7, (1, 2, 3)): "4 in-plane numbers",
        ("seven", SECOND_BOX_2D): r"must be \(slice, \(x0, y0, x1, y1\)\)",
    }
    for item, message in bad.items():
        with pytest.raises(InputError, match=message):
            segment_volume(predictor, volume, window, FIRST_BOX, add_boxes=[item])
    assert predictor.encoded == encoded


def _write_volume(path, volume):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(volume), str(path))
    return path


def test_command_line_added_boxes(tmp_path, capsys, monkeypatch):
    from MedSAMSegmentLib.fileio.imageio import read_image
    from MedSAMSegmentLib.fileio.markups import write_roi_json

    shared_predictor()  # built before Predictor is patched below (it makes one itself)
    volume, truth = moving_disc()
    image = _write_volume(tmp_path / "disc.nrrd", volume)
    out = tmp_path / "out.nii.gz"
    first = ["--box-ijk", *FIRST_BOX, "--key-slice", 2, "--window", 120, 240, "--quiet"]

    def no_model(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the added boxes were checked")

    monkeypatch.setattr("MedSAMSegmentLib.engine.predictor.Predictor", no_model)
    bad = {("52", "52", "6", "80", "80", "7"): "one slice thick along k",
           ("52", "52", "9", "80", "80", "9"): "not inside the volume",
           ("52", "52", "7", "99", "80", "7"): "not inside the volume"}
    for box, message in bad.items():
        status, _, err = call(capsys, "segment", image, *first, "--add-box-ijk", *box, "-o", out)
        assert status == 2 and message in err and "--add-box-ijk 1" in err, err
        assert_one_line_error(err)
        assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["disc.nrrd"]

    monkeypatch.setattr("MedSAMSegmentLib.engine.predictor.Predictor", lambda *a, **k: shared_predictor())
    status, _, err = call(capsys, "segment", image, *first, "--add-box-ijk", 52, 52, 7, 80, 80, 7, "-o", out)
    assert status == 0, err
    written = read_image(out).array
    assert dice(written, truth) > 0.95
    # --roi for the first box, combined with an added box: the same result.
    roi_to_ras = np.eye(4)
    roi_to_ras[:3, 3] = (-30, -30, 4)  # identity direction: LPS = IJK, so RAS = (-i, -j, k)
    write_roi_json(tmp_path / "roi.mrk.json", roi_to_ras, (29.0, 29.0, 9.0), coordinate_system="RAS")
    roi_out = tmp_path / "roi.nii.gz"
    status, _, err = call(capsys, "segment", image, "--roi", tmp_path / "roi.mrk.json", "--key-slice", 2,
                          "--window", 120, 240, "--quiet", "--add-box-ijk", 52, 52, 7, 80, 80, 7, "-o", roi_out)
    assert status == 0, err
    assert np.array_equal(read_image(roi_out).array, written)


def test_console_api_added_boxes(slicer_core):
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    from MedSAMSegmentLib.mrml_bridge.mrml_logic import MedSAMLogic

    volume, truth = moving_disc()
    node = slicer_core.addVolume(volume, np.eye(4), "disc")  # IJK = RAS
    first = slicer_core.addRoi((30, 30, 4), (29, 29, 9), name="first")  # i, j 16..44, k 0..8
    second = slicer_core.addRoi((66, 66, 7), (29, 29, 0.8), name="second")  # i, j 52..80 on slice 7 only
    thick = slicer_core.addRoi((66, 66, 7), (29, 29, 2.5), name="thick")  # slices 6..8
    segmentation = slicer_core.addSegmentation("seg", node)
    logic = MedSAMLogic(predictor=shared_predictor())
    options = {"keySlice": 2, "window": (120, 240)}
    with pytest.raises(InputError, match="added box 1 .*one slice thick along k"):
        logic.segment(node, first, segmentation, "disc", addBoxes=[thick], **options)
    with pytest.raises(InputError, match=r"added box 2 .*k range \[9, 9\] is not inside the volume"):
        logic.segment(node, first, segmentation, "disc", addBoxes=[second, (52, 52, 9, 80, 80, 9)], **options)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0  # nothing written

    mask, info = logic.computeMask(node, first, addBoxes=[second], **options)
    assert info["keySlices"] == [2, 7] and info["fromKey"][8] == 7
    assert dice(mask, truth) > 0.95
    segmentId = logic.segment(node, first, segmentation, "disc", addBoxes=[(52, 52, 7, 80, 80, 7)], **options)
    assert np.array_equal(slicer_core.segmentArray(segmentation, segmentId, node), mask)


def test_a_box_at_a_narrow_end_grows_towards_the_wider_first_box(monkeypatch):
    """A dome (radius 3 px on slice 0 to 27 px on slice 8), first box on its wide slice 8, an added box on
    its 3-px tip: the run from the tip towards the larger key box may grow, so slice 1 (radius 6) is
    followed; with the official prompt alone (the previous mask's box + 3 px) it is not."""
    from MedSAMSegmentLib.engine import key_boxes

    predictor = shared_predictor()
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:96, :96]
    volume = rng.normal(40, 8, (9, 96, 96)).astype(np.float32)
    truth = np.zeros(volume.shape, np.uint8)
    for k in range(9):
        disc = (yy - 48) ** 2 + (xx - 48) ** 2 <= (3 + 3 * k) ** 2
        volume[k][disc] += 160
        truth[k][disc] = 1
    window = explicit_window(volume, 120, 240)
    first, tip = (21, 21, 0, 75, 75, 8), (0, (45, 45, 51, 51))
    one = segment_volume(predictor, volume, window, first, key_slice=8)
    grown = segment_volume(predictor, volume, window, first, key_slice=8, add_boxes=[tip], previous=one)
    assert grown.from_key[1] == 0 and grown.stop_reasons["up from 0"] == "rejoined the earlier result on slice 2"
    assert dice(grown.mask[1], truth[1]) > 0.95 and dice(grown.mask[0], truth[0]) > 0.95
    monkeypatch.setattr(key_boxes, "ADDED_GROW", ())
    clipped = segment_volume(predictor, volume, window, first, key_slice=8, add_boxes=[tip], previous=one)
    assert dice(clipped.mask[1], truth[1]) < 0.9


def _reference_structure(name):
    import json

    from engine_support import REFERENCE_DIR

    info = json.loads((REFERENCE_DIR / "summary.json").read_text())[name]
    image, label = load_case(name.split("/")[0])
    return image, label == info["label"], auto_window(image, modality=info["modality"]), list(info["box"])


def test_an_added_box_keeps_the_earlier_slices_a_leaking_run_would_replace():
    """MR liver, the reference box, then the simulated user's second box (slice 17, where the first
    box's run under-fills most). The run down from it keeps the box's size while the liver shrinks
    (1,771 px on slice 12, where the liver has 1,022 and the earlier result 769). On the box alone
    the meet took those masks (Dice 0.846 -> 0.833); with the masks' size interpolated between the
    key slices too, the earlier result wins there and the run ends on the first such slice."""
    pytest.importorskip("SimpleITK")
    image, truth, window, box = _reference_structure("mr_abdomen_totalseg/liver")
    predictor = shared_predictor()
    one = segment_volume(predictor, image, window, box)
    two = segment_volume(predictor, image, window, box, add_boxes=[(17, (11, 16, 61, 73))], previous=one)
    assert dice(two.mask, truth) >= dice(one.mask, truth) - 0.01
    assert two.stop_reasons["down from 17"].startswith("the earlier result fits better from slice")
    ended = int(two.stop_reasons["down from 17"].rsplit(" ", 1)[1])
    assert all(two.from_key[s] == 9 for s in range(box[2], ended + 1))  # no decode beyond the end either
    assert min(two.slices) == ended


def test_an_added_key_slice_takes_the_narrowest_wider_box_that_reaches_the_users_box(monkeypatch):
    """CT stomach slice 105 (218 px in a 392-px tight box): the user's box alone reaches 0.76 of it
    (KEY_FILL 0.9); 5 % wider reaches 0.93 with Dice 0.93, 20 % wider fills it (the best fit) with
    what lies beside the stomach, Dice 0.80. The user's box goes through the decoder once: its mask
    and rating from the key slice's own decode serve the comparison with the wider boxes."""
    pytest.importorskip("SimpleITK")
    image, truth, window, _ = _reference_structure("ct_abdomen_pelvis_totalseg/stomach")
    ys, xs = np.nonzero(truth[103:108].any(axis=0))
    first = (int(xs.min()), int(ys.min()), 103, int(xs.max()), int(ys.max()), 107)
    predictor = shared_predictor()
    one = segment_volume(predictor, image, window, first, key_slice=103)
    prompts = []
    if predictor._decoder is not None:
        decoder, transformer = predictor._decoder, predictor._decoder._prompted
        monkeypatch.setattr(decoder, "_prompted", lambda emb, sparse: prompts.append(sparse) or transformer(emb, sparse))
    result = segment_volume(predictor, image, window, first, key_slice=103, add_boxes=[(105, (74, 25, 87, 52))],
                            previous=one)
    assert result.from_key[105] == 105 and dice(result.mask[105], truth[105]) > 0.9
    if prompts:
        import torch

        user_box = result.boxes[result.slices.index(105)]
        with torch.inference_mode():
            user_sparse, _ = predictor._box_prompts(user_box)
        assert sum(int(torch.equal(p, user_sparse)) for p in prompts) == 1


def test_an_added_box_where_the_model_finds_nothing_clips_the_slice_to_it_and_stops():
    """CT IVC at its lower end: a 2 x 2-voxel box on slice 57 (3 voxels of IVC), where the model finds
    nothing. The earlier mask there (the first box's run) is kept only inside the box (the user says
    the object is there), and the run from it ends on the next empty slice: before, while nothing was
    found, it prompted every slice up to the next key slice with that box (27 on the whole IVC)."""
    pytest.importorskip("SimpleITK")
    image, truth, window, _ = _reference_structure("ct_abdomen_pelvis_totalseg/inferior_vena_cava")
    ys, xs = np.nonzero(truth[57:63].any(axis=0))
    first = (int(xs.min()), int(ys.min()), 57, int(xs.max()), int(ys.max()), 62)
    predictor = shared_predictor()
    one = segment_volume(predictor, image, window, first, key_slice=62)
    speck = (57, (57, 46, 58, 47))
    added = segment_volume(predictor, image, window, first, key_slice=62, add_boxes=[speck], previous=one)
    outside = np.ones(truth[57].shape, bool)
    outside[46:48, 57:59] = False
    assert (one.mask[57] & outside).any() and not (added.mask[57] & outside).any()
    assert added.from_key[57] == 57 and added.slices == [57, 58]
    assert added.stop_reasons["up from 57"] == "object ended (empty mask)"
    assert np.array_equal(added.mask[58:], one.mask[58:])
