"""`batch --compile` on the CPU. torch.compile of the encoder fails on the CPU here (torch 2.13: an
Inductor lowering error in LiteMedSAM's encoder, after about 4 s), so the option is ignored there
with a note, and the masks are those of a run without it. Where compiling fails at the first batch
(a GPU without a working compiler), the uncompiled encoder takes over: checked here with the
CPU's real failure."""

import numpy as np
import pytest

from cli_support import call
from test_batch import ABDOMEN, KIDNEY_BOX, box_text, mask, write_manifest


def test_compile_on_the_cpu_is_ignored_with_a_note_and_gives_the_same_masks(tmp_path, cases_dir, capsys):
    from MedSAMSegmentLib.batch.worker_state import CPU_COMPILE_NOTE

    manifest = write_manifest(tmp_path / "cohort.csv", [
        {"image": str(ABDOMEN / "image.nii.gz"), "box_ijk": box_text(KIDNEY_BOX[:5] + (5,)), "name": "kidney",
         "output": "kidney.nii.gz"}])
    status, plain, _ = call(capsys, "batch", manifest, "-o", tmp_path / "plain", "--device", "cpu")
    assert status == 0 and "note:" not in plain, plain
    # In the same process: the predictor of the first run (not compiled) must not be handed to this one.
    status, compiled, _ = call(capsys, "batch", manifest, "-o", tmp_path / "compiled", "--device", "cpu", "--compile")
    assert status == 0, compiled
    assert f"note: {CPU_COMPILE_NOTE}\n" in compiled
    assert np.array_equal(mask(tmp_path / "compiled" / "kidney.nii.gz"), mask(tmp_path / "plain" / "kidney.nii.gz"))
    import json

    assert json.loads((tmp_path / "compiled" / "report.json").read_text())["summary"]["notes"] == [CPU_COMPILE_NOTE]


def test_a_compile_that_fails_at_the_first_batch_goes_on_uncompiled():
    pytest.importorskip("torch")
    import torch

    from MedSAMSegmentLib.batch.worker_state import CompiledEncoder
    from MedSAMSegmentLib.engine.predictor import Predictor

    predictor = Predictor("litemedsam", device="cpu", precision="float32", cache_mb=64)
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(np.stack(predictor._prepare([(rng.random((40, 48)) * 255).astype(np.uint8)])))
    with torch.inference_mode():
        eager = predictor._encoder(batch)
        notices = []
        encoder = CompiledEncoder(predictor._encoder, predictor.device, notices)
        first, second = encoder(batch), encoder(batch)
    if encoder.compiled is None:  # what torch 2.13 does on the CPU
        assert len(notices) == 1 and "--compile: torch.compile of the encoder failed on cpu" in notices[0]
        assert "\n" not in notices[0] and "continuing uncompiled" in notices[0]
        assert torch.equal(first, eager) and torch.equal(second, eager)
    else:  # a torch whose compile works here: then it must compute the same embeddings
        assert notices == []
        assert torch.allclose(first, eager, rtol=1e-4, atol=1e-4) and torch.equal(first, second)
