"""Per-model slice pre-processing, box scaling and mask post-processing (REFERENCE.md).

LiteMedSAM: longest side -> 256 (cv2 INTER_AREA), min-max to [0, 1], zero-pad to 256x256;
boxes scaled with truncation; logits cropped, upsampled as logits, then sigmoid > 0.5.
MedSAM ViT-B: 1024x1024 without keeping the aspect ratio (skimage cubic, anti-aliased),
min-max to [0, 1]; boxes scaled as floats; sigmoid first, then upsampled, then > 0.5.
"""

import numpy as np

from ..errors import DependencyError


def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise DependencyError("OpenCV is not installed: pip install opencv-python-headless") from exc
    return cv2


def _minmax01(image):
    image = image.astype(np.float64)
    lo, hi = image.min(), image.max()
    return (image - lo) / max(hi - lo, 1e-8)


def resized_shape(h, w, target):
    """(newh, neww) of the official resize_longest_side."""
    scale = target * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def resize_longest_side(image, target):
    cv2 = _cv2()
    newh, neww = resized_shape(image.shape[0], image.shape[1], target)
    return cv2.resize(image, (neww, newh), interpolation=cv2.INTER_AREA)


class LiteTransform:
    """LiteMedSAM (TinyViT, 256x256 input, aspect ratio kept, bottom/right padding)."""

    size = 256
    box_margin = 3  # official propagation: previous mask's box +/- 3 px at 256 scale

    def image_tensor(self, slice_uint8):
        """(3, 256, 256) float32 in [0, 1] for a (H, W) uint8 slice."""
        rgb = np.repeat(slice_uint8[:, :, None], 3, axis=-1)
        small = resize_longest_side(rgb, self.size)
        norm = _minmax01(small)
        padded = np.zeros((self.size, self.size, 3), np.float64)
        padded[: norm.shape[0], : norm.shape[1]] = norm
        return padded.astype(np.float32).transpose(2, 0, 1)

    def box_official(self, box_xyxy, hw):
        """Official scaling: int(c * 256 / max(H, W)) (truncation)."""
        ratio = self.size / max(hw)
        return np.array([int(c * ratio) for c in box_xyxy], np.float32)

    def box_exact(self, box_xyxy, hw):
        """Pixel box (inclusive) to model coordinates without losing sub-pixel precision."""
        ratio = self.size / max(hw)
        return np.asarray(box_xyxy, np.float64).astype(np.float32) * np.float32(ratio)

    def box_from_mask_official(self, mask_hw):
        """Official propagation: mask -> 256 scale (INTER_AREA), pad, tight box +/- 3, clamp."""
        small = resize_longest_side(mask_hw.astype(np.uint8), self.size)
        ys, xs = np.nonzero(small)
        if xs.size == 0:
            return None
        m = self.box_margin
        box = [max(0, xs.min() - m), max(0, ys.min() - m), min(self.size, xs.max() + m), min(self.size, ys.max() + m)]
        return np.array(box, np.float32)

    def logits_extent(self, hw):
        """(rows, cols) of the 256 x 256 logits that mask_from_logits reads: the image, not its padding."""
        return resized_shape(hw[0], hw[1], self.size)

    def mask_from_logits(self, logits, hw):
        """(256, 256) torch logits (or their top-left logits_extent part, at least) -> bool (H, W):
        crop, bilinear on logits, sigmoid > 0.5."""
        import torch
        from torch.nn import functional as F

        newh, neww = self.logits_extent(hw)
        cropped = logits[None, None, :newh, :neww].float()
        up = F.interpolate(cropped, size=tuple(hw), mode="bilinear", align_corners=False)
        return (torch.sigmoid(up) > 0.5)[0, 0].cpu().numpy()

    def model_extent(self, hw):
        """(width, height) the slice occupies in model coordinates (the rest is padding)."""
        newh, neww = self.logits_extent(hw)
        return neww, newh

    def box_to_pixels(self, model_box, hw):
        """A model-coordinate box back in slice pixels (floats)."""
        return np.asarray(model_box, np.float64) * (max(hw) / self.size)


class VitBTransform:
    """MedSAM ViT-B (SAM ViT-B, 1024x1024 input, aspect ratio NOT kept)."""

    size = 1024
    box_margin = 3

    def image_tensor(self, slice_uint8):
        try:
            from skimage.transform import resize
        except ImportError as exc:
            raise DependencyError("scikit-image is not installed: pip install scikit-image") from exc
        # The official code resizes the grey slice repeated to 3 channels; the channels stay
        # identical, so resizing the grey slice once gives the same numbers ~20x faster.
        big = resize(slice_uint8, (self.size, self.size), order=3, preserve_range=True, anti_aliasing=True)
        grey = _minmax01(big.astype(np.uint8)).astype(np.float32)
        return np.repeat(grey[None], 3, axis=0)

    def _scale(self, hw):
        return np.array([self.size / hw[1], self.size / hw[0]] * 2, np.float64)

    def box_official(self, box_xyxy, hw):
        return (np.asarray(box_xyxy, np.float64) * self._scale(hw)).astype(np.float32)

    box_exact = box_official

    def box_from_mask_official(self, mask_hw):
        ys, xs = np.nonzero(mask_hw)
        if xs.size == 0:
            return None
        h, w = mask_hw.shape
        m = self.pixel_margin((h, w))
        box = [max(0, xs.min() - m), max(0, ys.min() - m), min(w - 1, xs.max() + m), min(h - 1, ys.max() + m)]
        return self.box_official(box, (h, w))

    def logits_extent(self, hw):
        """The whole 256 x 256 grid: the slice was stretched to the model's square input."""
        return None

    def mask_from_logits(self, logits, hw):
        import torch
        from torch.nn import functional as F

        prob = torch.sigmoid(logits[None, None].float())
        up = F.interpolate(prob, size=tuple(hw), mode="bilinear", align_corners=False)
        return (up > 0.5)[0, 0].cpu().numpy()

    def pixel_margin(self, hw):
        return self.box_margin * max(hw) / 256.0

    def model_extent(self, hw):
        return self.size, self.size

    def box_to_pixels(self, model_box, hw):
        return np.asarray(model_box, np.float64) / self._scale(hw)


def transform_for(image_size):
    return LiteTransform() if image_size == 256 else VitBTransform()
