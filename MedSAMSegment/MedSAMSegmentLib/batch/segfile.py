"""Several segments of one image in one Slicer .seg.nrrd (--group-by-image), written atomically.

Segments that do not overlap share a layer with label values 1, 2, ...; overlapping ones go to
further layers (Slicer's "shared labelmap" layers), so no voxel of any mask is lost. The
per-segment header fields are imageio's single-segment ones, renumbered.
"""

import numpy as np

from ..errors import InputError


def _layers(masks):
    """Layer index and label value of each mask: first fit into a layer it does not overlap."""
    occupied, placement = [], []
    for mask in masks:
        m = mask.astype(bool)
        for layer, used in enumerate(occupied):
            if not (used[0] & m).any():
                used[0] |= m
                used[1] += 1
                placement.append((layer, used[1]))
                break
        else:
            occupied.append([m.copy(), 1])
            placement.append((len(occupied) - 1, 1))
    return placement, len(occupied)


def write_segments(path, segments, reference, tags=None, overwrite=False):
    """segments: [(name, rgb 0..1, uint8 mask (K, J, I))]; tags go on every segment."""
    from ..fileio import imageio

    if imageio.output_kind(path) != "segmentation":
        raise InputError(f"{path}: a multi-segment file must end in .seg.nrrd")
    if not segments:
        raise InputError(f"{path}: no segment to write")
    sitk = imageio._sitk()
    placement, count = _layers([mask for _, _, mask in segments])
    data = np.zeros((count,) + tuple(reference.shape), np.uint8)
    header = {}
    for number, ((name, rgb, mask), (layer, value)) in enumerate(zip(segments, placement)):
        data[layer][mask != 0] = value
        one = imageio._segmentation_header(np.asarray(mask), reference, name, list(rgb), tags or {})
        one.update({"Segment0_ID": f"Segment_{number + 1}", "Segment0_LabelValue": str(value),
                    "Segment0_Layer": str(layer)})
        header.update({key.replace("Segment0_", f"Segment{number}_", 1): text for key, text in one.items()})
    if count == 1:
        img = sitk.GetImageFromArray(data[0])
    else:  # (K, J, I, layers): a vector image, written as NRRD's 4D with the layers first
        img = sitk.GetImageFromArray(np.moveaxis(data, 0, -1), isVector=True)
    img.SetSpacing(tuple(float(s) for s in reference.spacing))
    img.SetOrigin(tuple(float(o) for o in reference.origin))
    img.SetDirection(tuple(reference.direction.ravel()))
    for key, value in header.items():
        img.SetMetaData(key, value)
    with imageio.atomic_output(path, overwrite) as temp:
        imageio._write(sitk, img, temp, path)
