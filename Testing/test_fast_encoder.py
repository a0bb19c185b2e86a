"""The inference-optimised TinyViT computes the reference function; the predictor picks the right path."""

import numpy as np
import pytest

from engine_support import REFERENCE_DIR

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def network():
    from MedSAMSegmentLib.model.models import load_network

    net, _ = load_network("litemedsam", device="cpu")
    return net


@pytest.fixture(scope="module")
def real_slice():
    """A real abdominal CT slice, pre-processed as the official script does: (1, 3, 256, 256)."""
    from MedSAMSegmentLib.engine.preprocess import LiteTransform

    path = REFERENCE_DIR / "mr_abdomen_totalseg" / "_input_uint8.npz"
    if not path.is_file():
        pytest.skip("../shared/reference is not available")
    image = np.load(path)["imgs"][7]
    return torch.from_numpy(LiteTransform().image_tensor(image)[None])


@pytest.fixture(scope="module")
def reference_embedding(network, real_slice):
    with torch.inference_mode():
        return network.image_encoder(real_slice)


def _relative_error(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_float32_fast_encoder_equals_the_reference_on_a_real_slice(network, real_slice, reference_embedding):
    from MedSAMSegmentLib.model.fast_encoder import FastTinyViT

    fast = FastTinyViT(network.image_encoder, "float32")
    with torch.inference_mode():
        out = fast(real_slice)
    assert out.shape == reference_embedding.shape == (1, 256, 64, 64)
    assert out.dtype == torch.float32
    assert _relative_error(out, reference_embedding) < 1e-4


def test_the_unfused_path_is_equally_exact(network, real_slice, reference_embedding, monkeypatch):
    """What runs where oneDNN's fused kernels are missing (other builds, CUDA)."""
    from MedSAMSegmentLib.model import fast_encoder

    monkeypatch.setattr(fast_encoder, "_ONEDNN", None)
    fast = fast_encoder.FastTinyViT(network.image_encoder, "float32")
    with torch.inference_mode():
        out = fast(real_slice)
    assert _relative_error(out, reference_embedding) < 1e-4


def test_building_the_fast_encoder_leaves_the_reference_untouched(network, real_slice, reference_embedding):
    from MedSAMSegmentLib.model.fast_encoder import FastTinyViT

    before = {k: v.clone() for k, v in network.image_encoder.state_dict().items()}
    FastTinyViT(network.image_encoder, "bfloat16")
    after = network.image_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bfloat16_path_runs_and_stays_close(network, real_slice, reference_embedding):
    from MedSAMSegmentLib.model.fast_encoder import FastTinyViT

    fast = FastTinyViT(network.image_encoder, "bfloat16")
    with torch.inference_mode():
        out = fast(torch.cat([real_slice, real_slice]))  # a batch of two
    assert out.shape == (2, 256, 64, 64) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # bfloat16 keeps 8 significant bits: a few per cent of the embedding, not exact (see benchmarks).
    rel = float((out[1:] - reference_embedding).norm() / reference_embedding.norm())
    assert rel < 0.1
    assert torch.equal(out[0], out[1])


def test_unknown_precision_is_refused(network):
    from MedSAMSegmentLib.model.fast_encoder import FastTinyViT

    with pytest.raises(ValueError, match="precision"):
        FastTinyViT(network.image_encoder, "int4")


def test_make_encoder_selects_the_path():
    from MedSAMSegmentLib.model.fast_encoder import FastTinyViT, make_encoder
    from MedSAMSegmentLib.model.models import build_network

    cpu = torch.device("cpu")
    lite = build_network("litemedsam").eval()
    assert isinstance(make_encoder(lite.image_encoder, cpu, torch.float32), FastTinyViT)
    assert make_encoder(lite.image_encoder, cpu, torch.bfloat16).dtype == torch.bfloat16
    assert make_encoder(lite.image_encoder, cpu, torch.float32, optimise=False) is lite.image_encoder
    # Apple MPS keeps the reference module (the fast path is only checked on CPU and CUDA).
    assert not isinstance(make_encoder(lite.image_encoder, torch.device("mps"), torch.float32), FastTinyViT)
    # Anything that is not TinyViT (MedSAM ViT-B) runs the reference module, under autocast if asked.
    class Other(torch.nn.Module):
        def forward(self, x):
            return x * 2

    other = Other()
    assert make_encoder(other, cpu, torch.float32) is other
    encode = make_encoder(other, cpu, torch.bfloat16)
    assert encode is not other and torch.equal(encode(torch.ones(1)), torch.full((1,), 2.0))


def test_predictor_uses_the_fast_paths_by_default(real_slice, reference_embedding):
    from MedSAMSegmentLib.engine.predictor import Predictor
    from MedSAMSegmentLib.model.fast_decoder import FastMaskDecoder
    from MedSAMSegmentLib.model.fast_encoder import FastTinyViT

    fast = Predictor(model="litemedsam", device="cpu", cache_mb=16)
    assert isinstance(fast._encoder, FastTinyViT) and fast._encoder.dtype == torch.float32
    assert isinstance(fast._decoder, FastMaskDecoder)
    official = Predictor(model="litemedsam", device="cpu", cache_mb=16, optimise=False)
    assert official._encoder is official.network.image_encoder and official._decoder is None
    bf16 = Predictor(model="litemedsam", device="cpu", precision="bfloat16", cache_mb=16)
    assert bf16._encoder.dtype == torch.bfloat16
    image = np.load(REFERENCE_DIR / "mr_abdomen_totalseg" / "_input_uint8.npz")["imgs"][7]
    emb = fast.embedding("slice", image)
    assert _relative_error(emb[None], reference_embedding) < 1e-4
    box = (73, 50, 87, 62)
    assert np.array_equal(fast.segment_2d(image, box), official.segment_2d(image, box))


def test_thread_tuning_never_raises_the_count():
    from MedSAMSegmentLib.model.fast_encoder import physical_cores, tune_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert tune_threads() == 1
        cores = physical_cores()
        assert cores is None or cores >= 1
    finally:
        torch.set_num_threads(before)
