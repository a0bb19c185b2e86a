"""The decoder fast path computes SAM's single-mask decoder output for box prompts (real weights)."""

import numpy as np
import pytest

from engine_support import REFERENCE_DIR

torch = pytest.importorskip("torch")

BOXES = [(60, 50, 150, 140), (10, 20, 240, 200), (120, 90, 130, 100)]  # model coordinates (256 grid)


@pytest.fixture(scope="module")
def network_and_embedding():
    from MedSAMSegmentLib.engine.preprocess import LiteTransform
    from MedSAMSegmentLib.model.models import load_network

    path = REFERENCE_DIR / "mr_abdomen_totalseg" / "_input_uint8.npz"
    if not path.is_file():
        pytest.skip("../shared/reference is not available")
    net, _ = load_network("litemedsam", device="cpu")
    image = torch.from_numpy(LiteTransform().image_tensor(np.load(path)["imgs"][7])[None])
    with torch.inference_mode():
        return net, net.image_encoder(image)[0]


def _reference(net, embedding, boxes):
    with torch.inference_mode():
        sparse, dense = net.prompt_encoder(points=None, boxes=torch.tensor(boxes, dtype=torch.float32), masks=None)
        logits, iou = net.mask_decoder(image_embeddings=embedding[None], image_pe=net.prompt_encoder.get_dense_pe(),
                                       sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                       multimask_output=False)
    return logits[:, 0], iou[:, 0]


def _fast(decoder, net, embedding, boxes):
    with torch.inference_mode():
        sparse, _ = net.prompt_encoder(points=None, boxes=torch.tensor(boxes, dtype=torch.float32), masks=None)
        return decoder(embedding, sparse)


@pytest.mark.parametrize("one_at_a_time", [True, False], ids=["cpu-one-prompt-at-a-time", "batched-as-on-gpu"])
def test_fast_decoder_matches_the_reference_for_single_and_batched_boxes(network_and_embedding, one_at_a_time):
    from MedSAMSegmentLib.model.fast_decoder import FastMaskDecoder

    net, embedding = network_and_embedding
    with torch.inference_mode():
        decoder = FastMaskDecoder(net)
    assert decoder.one_at_a_time  # on the CPU; the batched path is the GPU's
    decoder.one_at_a_time = one_at_a_time
    ref_logits, ref_iou = _reference(net, embedding, BOXES)
    logits, iou = _fast(decoder, net, embedding, BOXES)  # one batch of three candidates
    assert logits.shape == ref_logits.shape == (3, 256, 256)
    assert float((logits - ref_logits).abs().max()) < 1e-3 * float(ref_logits.abs().max())
    assert np.allclose(iou.numpy(), ref_iou.numpy(), atol=1e-4)
    assert torch.equal(logits > 0, ref_logits > 0)
    for n, box in enumerate(BOXES):  # one at a time, re-using the slice's memoised terms
        one, _ = _fast(decoder, net, embedding, [box])
        assert torch.allclose(one[0], logits[n], atol=1e-3)


def test_memo_follows_the_embedding_not_a_stale_slice(network_and_embedding):
    from MedSAMSegmentLib.model.fast_decoder import FastMaskDecoder

    net, embedding = network_and_embedding
    with torch.inference_mode():
        decoder = FastMaskDecoder(net)
        other = embedding.flip(-1).contiguous()  # another slice's embedding
    first, _ = _fast(decoder, net, embedding, BOXES[:1])
    second, _ = _fast(decoder, net, other, BOXES[:1])
    expected, _ = _reference(net, other, BOXES[:1])
    assert not torch.allclose(first, second)
    assert torch.allclose(second, expected, atol=1e-3)


def test_each_upscaled_candidate_equals_the_batch_decode_bit_for_bit(network_and_embedding):
    from MedSAMSegmentLib.model.fast_decoder import FastMaskDecoder

    net, embedding = network_and_embedding
    with torch.inference_mode():
        decoder = FastMaskDecoder(net)
        sparse, _ = net.prompt_encoder(points=None, boxes=torch.tensor(BOXES, dtype=torch.float32), masks=None)
        logits, iou = decoder(embedding, sparse)
        state, iou_first = decoder.prompted(embedding, sparse)
        for n in (2, 0):  # in any order, alone: propagation makes only the masks it looks at
            assert torch.equal(decoder.logits(state, n, n + 1)[0], logits[n])
    assert torch.equal(iou_first, iou)


def test_the_cached_embedding_is_never_written(network_and_embedding):
    """The image tokens' residuals are added in place after the first block; the first block's
    residual is the cached embedding itself, which must come out unchanged (the cache serves it again)."""
    from MedSAMSegmentLib.model.fast_decoder import FastMaskDecoder

    net, embedding = network_and_embedding
    before = embedding.clone()
    with torch.inference_mode():
        decoder = FastMaskDecoder(net)
    for one_at_a_time in (True, False):
        decoder.one_at_a_time = one_at_a_time
        _fast(decoder, net, embedding, BOXES)
        _fast(decoder, net, embedding, BOXES[:1])
    assert torch.equal(embedding, before)


@pytest.mark.parametrize("hw", [(101, 122), (122, 101), (97, 300)])
def test_a_non_square_slice_skips_the_padding_and_keeps_its_mask(network_and_embedding, hw):
    """The logits of the grid's padding (below or right of a non-square slice) are never upscaled;
    the part the mask reads, and so the mask, is the full decode's."""
    from MedSAMSegmentLib.engine.preprocess import LiteTransform
    from MedSAMSegmentLib.model.fast_decoder import FastMaskDecoder

    net, embedding = network_and_embedding
    transform = LiteTransform()
    extent = transform.logits_extent(hw)
    assert min(extent) < 256
    with torch.inference_mode():
        decoder = FastMaskDecoder(net)
    full, iou = _fast(decoder, net, embedding, BOXES)
    with torch.inference_mode():
        sparse, _ = net.prompt_encoder(points=None, boxes=torch.tensor(BOXES, dtype=torch.float32), masks=None)
        part, iou_part = decoder(embedding, sparse, extent)
    rows, cols = part.shape[1:]
    assert (rows, cols) == tuple(-(-n // 4) * 4 for n in extent) and rows * cols < 256 * 256
    assert torch.allclose(part, full[:, :rows, :cols], atol=1e-4) and torch.equal(iou_part, iou)
    for n in range(len(BOXES)):
        assert np.array_equal(transform.mask_from_logits(part[n], hw), transform.mask_from_logits(full[n], hw))
