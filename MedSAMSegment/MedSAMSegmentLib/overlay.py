"""A PNG of a few slices: image grey, reference outline green, prediction outline red, slice numbers."""

import numpy as np

from .errors import OutputError
from .fileio.imageio import atomic_output

GREEN, RED, WHITE = (0, 200, 0), (0, 0, 255), (255, 255, 255)  # OpenCV colours are BGR


def display_flips(ijk_to_ras, axis="k"):
    """(flip rows, flip columns) that show a slice in radiological orientation.

    Each in-plane index axis should run toward patient left, posterior or inferior (decreasing RAS),
    so an axis whose dominant RAS component is positive is flipped.
    """
    x_axis, y_axis = {"k": (0, 1), "j": (0, 2), "i": (1, 2)}[axis]
    columns = np.asarray(ijk_to_ras, dtype=float)[:3, :3]

    def increasing(index):
        vector = columns[:, index]
        return vector[np.argmax(np.abs(vector))] > 0

    return increasing(y_axis), increasing(x_axis)


def _take(volume, axis, index):
    return np.take(volume, index, axis={"k": 0, "j": 1, "i": 2}[axis])


def _outline(cv2, panel, mask, colour, scale, thickness):
    big = cv2.resize(mask.astype(np.uint8), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(panel, contours, -1, colour, thickness)


def render(grey_kji, reference, rows, slices, axis="k", flips=(False, False), crop=None, scale=2):
    """BGR image: one row per (title, mask) in `rows`, one column per slice index.

    grey_kji is the windowed uint8 volume; crop = (y0, y1, x0, x1) in slice pixels, or None.
    """
    import cv2

    def prepared(volume, index):
        plane = _take(volume, axis, index)
        if crop is not None:
            plane = plane[crop[0] : crop[1], crop[2] : crop[3]]
        if flips[0]:
            plane = plane[::-1]
        if flips[1]:
            plane = plane[:, ::-1]
        return np.ascontiguousarray(plane)

    title_height = 28
    grid = []
    for title, mask in rows:
        panels = []
        for index in slices:
            grey = prepared(grey_kji, index)
            panel = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
            panel = cv2.cvtColor(panel, cv2.COLOR_GRAY2BGR)
            _outline(cv2, panel, prepared(reference, index), GREEN, scale, 2)
            _outline(cv2, panel, prepared(mask, index), RED, scale, 2)
            cv2.putText(panel, f"{axis}={index}", (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, WHITE, 1, cv2.LINE_AA)
            panels.append(cv2.copyMakeBorder(panel, 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=(0, 0, 0)))
        strip = np.hstack(panels)
        header = np.zeros((title_height, strip.shape[1], 3), np.uint8)
        cv2.putText(header, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, WHITE, 1, cv2.LINE_AA)
        grid.append(np.vstack([header, strip]))
    return np.vstack(grid)


def write_png(path, bgr, overwrite=False, text=None):
    """Write atomically (temporary file, then rename), like every other output.

    `text` (keyword -> value) adds PNG tEXt chunks, e.g. a mark of the program that wrote it."""
    import cv2

    with atomic_output(path, overwrite) as temp:
        if not cv2.imwrite(temp, bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise OutputError(f"cannot write {path}: OpenCV could not encode or save the PNG")
        if text:
            _add_png_text(temp, text)


_PNG_SIGNATURE_AND_IHDR = 8 + 25  # signature, then the IHDR chunk (4 length + 4 type + 13 data + 4 CRC)


def _add_png_text(path, text):
    """Insert tEXt chunks right after IHDR (OpenCV cannot write them)."""
    import struct
    import zlib

    with open(path, "rb") as f:
        data = f.read()
    chunks = b""
    for key, value in text.items():
        body = b"tEXt" + key.encode("latin-1") + b"\0" + value.encode("latin-1")
        chunks += struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    with open(path, "wb") as f:
        f.write(data[:_PNG_SIGNATURE_AND_IHDR] + chunks + data[_PNG_SIGNATURE_AND_IHDR:])


def read_png_text(path, limit=1 << 16):
    """The tEXt chunks before the image data of a PNG file, as {keyword: value}; {} if none or unreadable."""
    import struct

    try:
        with open(path, "rb") as f:
            data = f.read(limit)
    except OSError:
        return {}
    found, position = {}, 8
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return {}
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"IDAT":
            break
        if kind == b"tEXt":
            key, _, value = data[position + 8 : position + 8 + length].partition(b"\0")
            found[key.decode("latin-1")] = value.decode("latin-1")
        position += 12 + length
    return found
