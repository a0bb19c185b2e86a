#!/usr/bin/env python3
"""Draw the extension, module and effect icons (numpy + OpenCV; no third-party artwork).

A stylised axial MR slice, a dashed yellow box prompt and the green contour the model returns.
    python scripts/make_icons.py
"""

from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {
    "Resources/Icons/MedSAMSegment.png": 128,
    "MedSAMSegment/Resources/Icons/MedSAMSegment.png": 128,
    "SegmentEditorMedSAM/SegmentEditorMedSAMLib/SegmentEditorEffect.png": 21,
}
SCALE = 8  # draw large, then shrink with area averaging: smooth edges without an anti-aliasing library


def drawIcon(size):
    big = size * SCALE
    s = big / 128.0  # design units are pixels of the 128 px icon
    rgba = np.zeros((big, big, 4), np.uint8)

    def p(x, y):
        return int(round(x * s)), int(round(y * s))

    # Rounded dark-blue tile (BGR + alpha).
    tile = np.zeros((big, big), np.uint8)
    radius = int(18 * s)
    cv2.rectangle(tile, p(4, 4 + 18), p(124, 124 - 18), 255, -1)
    cv2.rectangle(tile, p(4 + 18, 4), p(124 - 18, 124), 255, -1)
    for cx, cy in ((22, 22), (106, 22), (22, 106), (106, 106)):
        cv2.circle(tile, p(cx, cy), radius, 255, -1)
    rgba[tile > 0] = (70, 40, 25, 255)

    # Head: skull ring, brain, ventricles.
    cv2.ellipse(rgba, p(64, 66), p(46, 54), 0, 0, 360, (215, 215, 215, 255), -1)
    cv2.ellipse(rgba, p(64, 66), p(40, 48), 0, 0, 360, (95, 95, 95, 255), -1)
    cv2.ellipse(rgba, p(64, 66), p(37, 45), 0, 0, 360, (150, 150, 150, 255), -1)
    cv2.ellipse(rgba, p(57, 62), p(5, 13), 15, 0, 360, (60, 60, 60, 255), -1)
    cv2.ellipse(rgba, p(71, 62), p(5, 13), -15, 0, 360, (60, 60, 60, 255), -1)

    # Lesion (bright) with the model's contour around it.
    lesion = [p(80, 76), p(92, 72), p(99, 82), p(96, 95), p(84, 98), p(76, 89)]
    cv2.fillPoly(rgba, [np.array(lesion, np.int32)], (235, 235, 235, 255))
    contour = [p(77, 73), p(93, 68), p(103, 81), p(99, 98), p(83, 102), p(72, 90)]
    cv2.polylines(rgba, [np.array(contour, np.int32)], True, (60, 220, 60, 255), max(1, int(4 * s)), cv2.LINE_AA)

    # Dashed yellow box prompt.
    x0, y0, x1, y1 = 66, 60, 110, 110
    dash, gap, width = 8, 5, max(1, int(4 * s))
    for a, b, horizontal, fixed in ((x0, x1, True, y0), (x0, x1, True, y1), (y0, y1, False, x0), (y0, y1, False, x1)):
        t = a
        while t < b:
            end = min(t + dash, b)
            start_pt, end_pt = (p(t, fixed), p(end, fixed)) if horizontal else (p(fixed, t), p(fixed, end))
            cv2.line(rgba, start_pt, end_pt, (0, 215, 255, 255), width, cv2.LINE_AA)
            t += dash + gap

    small = cv2.resize(rgba, (size, size), interpolation=cv2.INTER_AREA)
    return small


def drawEffectIcon(size):
    """Small toolbar icon: only the box prompt and the contour, on a transparent background."""
    big = size * SCALE
    s = big / 21.0
    rgba = np.zeros((big, big, 4), np.uint8)

    def p(x, y):
        return int(round(x * s)), int(round(y * s))

    blob = [p(7, 6), p(14, 5), p(16, 11), p(13, 16), p(7, 15), p(5, 10)]
    cv2.fillPoly(rgba, [np.array(blob, np.int32)], (90, 200, 90, 255))
    cv2.polylines(rgba, [np.array(blob, np.int32)], True, (30, 120, 30, 255), int(1.2 * s), cv2.LINE_AA)
    cv2.rectangle(rgba, p(1.5, 1.5), p(19.5, 19.5), (0, 200, 255, 255), int(1.6 * s), cv2.LINE_AA)
    return cv2.resize(rgba, (size, size), interpolation=cv2.INTER_AREA)


def main():
    for relative, size in TARGETS.items():
        path = ROOT / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        image = drawEffectIcon(size) if size < 64 else drawIcon(size)
        if not cv2.imwrite(str(path), image):
            raise SystemExit(f"could not write {path}")
        print(f"wrote {relative} ({size}x{size})")


if __name__ == "__main__":
    main()
