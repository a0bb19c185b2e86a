"""Per-model pre/post-processing against the formulas and libraries REFERENCE.md names."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from MedSAMSegmentLib.engine.preprocess import LiteTransform, VitBTransform, resized_shape

RNG = np.random.default_rng(7)


def _slice(h, w):
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


@pytest.mark.parametrize("hw", [(512, 512), (101, 122), (20, 512), (77, 42)])
def test_lite_image_is_resized_longest_side_normalised_then_padded(hw):
    import cv2

    img = _slice(*hw)
    out = LiteTransform().image_tensor(img)
    newh, neww = resized_shape(*hw, 256)
    assert max(newh, neww) == 256
    expect = cv2.resize(np.repeat(img[:, :, None], 3, -1), (neww, newh), interpolation=cv2.INTER_AREA)
    expect = (expect - expect.min()) / max(expect.max() - expect.min(), 1e-8)
    assert out.shape == (3, 256, 256) and out.dtype == np.float32
    assert np.array_equal(out[:, :newh, :neww], expect.astype(np.float32).transpose(2, 0, 1))
    assert not out[:, newh:, :].any() and not out[:, :, neww:].any()  # zero padding bottom/right


def test_lite_boxes_truncate_like_the_official_code_and_exact_mode_keeps_fractions():
    t = LiteTransform()
    box = (94, 46, 111, 77)
    assert list(t.box_official(box, (101, 122))) == [int(c * 256 / 122) for c in box]
    assert np.allclose(t.box_exact(box, (101, 122)), np.array(box) * 256 / 122)


def test_lite_mask_is_upsampled_as_logits_then_thresholded():
    t = LiteTransform()
    logits = torch.randn(256, 256)
    hw = (101, 122)
    newh, neww = resized_shape(*hw, 256)
    up = F.interpolate(logits[None, None, :newh, :neww], size=hw, mode="bilinear", align_corners=False)
    assert np.array_equal(t.mask_from_logits(logits, hw), (torch.sigmoid(up) > 0.5)[0, 0].numpy())


def test_lite_box_from_mask_follows_the_official_256_scale_rule():
    t = LiteTransform()
    mask = np.zeros((512, 512), np.uint8)
    mask[100:201, 50:151] = 1  # rows 100..200, cols 50..150 -> 256 scale halves
    assert list(t.box_from_mask_official(mask)) == [25 - 3, 50 - 3, 75 + 3, 100 + 3]
    edge = np.zeros((512, 512), np.uint8)
    edge[0:10, 500:512] = 1
    x0, y0, x1, y1 = t.box_from_mask_official(edge)
    assert y0 == 0 and x1 == 256  # clamped to [0, 256], as the official get_bbox256
    assert t.box_from_mask_official(np.zeros((64, 64), np.uint8)) is None


def test_vitb_image_is_cubic_resized_to_1024_without_keeping_aspect_then_minmax():
    from skimage.transform import resize

    img = _slice(40, 60)
    out = VitBTransform().image_tensor(img)
    big = resize(np.repeat(img[:, :, None], 3, -1), (1024, 1024), order=3, preserve_range=True,
                 anti_aliasing=True).astype(np.uint8)
    expect = (big - big.min()) / np.clip(big.max() - big.min(), 1e-8, None)
    assert out.shape == (3, 1024, 1024)
    assert np.array_equal(out, expect.astype(np.float32).transpose(2, 0, 1))


def test_vitb_box_scales_each_axis_as_float():
    box = VitBTransform().box_official((10, 20, 30, 40), (40, 60))
    assert np.allclose(box, [10 * 1024 / 60, 20 * 1024 / 40, 30 * 1024 / 60, 40 * 1024 / 40])


def test_vitb_mask_is_sigmoid_first_then_upsampled():
    logits = torch.randn(256, 256) * 4
    hw = (40, 60)
    prob = F.interpolate(torch.sigmoid(logits)[None, None], size=hw, mode="bilinear", align_corners=False)
    got = VitBTransform().mask_from_logits(logits, hw)
    assert np.array_equal(got, (prob > 0.5)[0, 0].numpy())
