"""Images in as (K, J, I) arrays with their RAS geometry; masks out in exactly that geometry, atomically.

SimpleITK works in LPS, Slicer and the rest of this package in RAS: RAS = diag(-1, -1, 1) @ LPS.
Only index space matters to the engine, so any invertible direction matrix (oblique, flipped,
even non-orthogonal) is carried through unchanged.
"""

import contextlib
import os
import re
import secrets
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import DependencyError, InputError, OutputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
LABELMAP_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")
SEGMENTATION_EXTENSION = ".seg.nrrd"
LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass
class Image:
    """A grey-level volume and where its voxels are.

    `spacing`, `origin` and `direction` are SimpleITK's (LPS, i/j/k order, direction columns =
    index axes); a 2D file is held as one slice (K = 1) with a unit third axis and written back 2D.
    """

    array: np.ndarray
    spacing: tuple
    origin: tuple
    direction: np.ndarray
    dimension: int = 3
    notes: list = field(default_factory=list)
    path: str = ""

    @property
    def shape(self):
        return self.array.shape

    @property
    def ijk_to_ras(self):
        matrix = np.eye(4)
        matrix[:3, :3] = LPS_TO_RAS @ self.direction @ np.diag(self.spacing)
        matrix[:3, 3] = LPS_TO_RAS @ np.asarray(self.origin, dtype=float)
        return matrix

    @property
    def ras_to_ijk(self):
        return np.linalg.inv(self.ijk_to_ras)


def _sitk():
    try:
        import SimpleITK
    except ImportError as exc:
        raise DependencyError("SimpleITK is needed to read and write images (pip install SimpleITK)") from exc
    return SimpleITK


def _itk_reason(exc):
    """The useful last line of an ITK exception, without source paths and object addresses."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # The reason follows the "ITK ERROR:" tag; later lines may be a dump (e.g. a matrix).
    tagged = [line for line in lines if line.startswith(("ITK ERROR:", "sitk::ERROR:"))]
    reason = tagged[0] if tagged else (lines[-1] if lines else str(exc))
    return re.sub(r"^(sitk::ERROR:|ITK ERROR:)\s*(\w+\(0x[0-9a-f]+\):\s*)?", "", reason)


def _size_text(size):
    return "x".join(str(n) for n in size)


def check_readable(path, what="image file"):
    """InputError now, with the real reason, if `path` cannot be opened for reading.

    Tells "not found" from "permission denied" (on the file or on a folder above it) and
    from a folder; opening is the only test that also binds for root and ACLs.
    """
    path = os.fspath(path)
    try:
        os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except PermissionError:
        raise InputError(f"cannot read {path}: permission denied (on a folder above it)") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if os.path.isdir(path):
        raise InputError(_folder_reason(path, what))
    if not os.path.isfile(path):  # a pipe or device: opening it could wait forever
        raise InputError(f"{path} is not a regular file")
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise InputError(f"cannot read {path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    return path


def _folder_reason(path, what):
    if what == "image file" and _holds_dicom(path):
        return (
            f"{path} is a folder of DICOM files: DICOM series are not supported yet; convert the "
            "series to one NIfTI or NRRD file first (e.g. with Slicer's DICOM module or dcm2niix)"
        )
    return f"{path} is a folder: give the {what} itself"


def _holds_dicom(folder, look_at=20):
    """Whether any of the first files in folder has the DICOM preamble ("DICM" at byte 128)."""
    with contextlib.suppress(OSError):
        for entry in sorted(os.scandir(folder), key=lambda e: e.name)[:look_at]:
            with contextlib.suppress(OSError):
                if entry.is_file():
                    with open(entry.path, "rb") as f:
                        if f.read(132)[128:] == b"DICM":
                            return True
    return False


def read_image(path):
    """Read a 2D or 3D grey-level (or RGB) image file into an `Image`; InputError if it can't be segmented."""
    sitk = _sitk()
    path = check_readable(path)
    try:
        img = sitk.ReadImage(path)
    except RuntimeError as exc:
        raise InputError(f"cannot read {path} as an image: {_itk_reason(exc)}") from None
    notes = []
    img = _spatial_part(sitk, img, path, notes)
    array = _grey_array(sitk, img, path, notes)
    dimension = img.GetDimension()
    spacing, origin = tuple(img.GetSpacing()), tuple(img.GetOrigin())
    direction = np.array(img.GetDirection(), dtype=float).reshape(dimension, dimension)
    if dimension == 2:
        array = array[np.newaxis]
        spacing, origin = spacing + (1.0,), origin + (0.0,)
        direction = np.block([[direction, np.zeros((2, 1))], [np.zeros((1, 2)), np.ones((1, 1))]])
    if abs(np.linalg.det(direction)) < 1e-6:
        raise InputError(f"{path} has a degenerate direction matrix (its axes are not independent)")
    _check_content(array, path)
    return Image(array, spacing, origin, direction, dimension, notes, path)


def _spatial_part(sitk, img, path, notes):
    """2D and 3D pass; a 4D file with one time point becomes 3D; real time series are refused."""
    size = img.GetSize()
    if img.GetDimension() in (2, 3):
        return img
    if img.GetDimension() == 4 and size[3] == 1:
        notes.append("4D file with a single time point: segmenting its 3D volume")
        return sitk.Extract(img, size[:3] + (0,), (0, 0, 0, 0))
    raise InputError(
        f"{path} is {img.GetDimension()}D ({_size_text(size)}): a time series or multi-volume file; "
        "save the one 3D volume to segment first"
    )


def _grey_array(sitk, img, path, notes):
    components = img.GetNumberOfComponentsPerPixel()
    if components == 1:
        array = sitk.GetArrayFromImage(img)
    elif components in (3, 4):
        # Colour: the models see grey slices, so collapse to luminance (Rec. 601 weights); alpha ignored.
        notes.append("converted RGB to luminance (0.299 R + 0.587 G + 0.114 B)")
        rgb = sitk.GetArrayViewFromImage(img)
        array = np.zeros(rgb.shape[:-1], dtype=np.float32)
        for channel, weight in enumerate(LUMINANCE_WEIGHTS):
            array += np.float32(weight) * rgb[..., channel].astype(np.float32)
    else:
        raise InputError(
            f"{path} has {components} values per voxel ({_size_text(img.GetSize())} x {components}): "
            "a vector image or a time series stored as components; only grey-level or RGB images can be segmented"
        )
    if np.iscomplexobj(array):
        raise InputError(f"{path} has complex voxel values; save the magnitude image first")
    return array


def _check_content(array, path):
    """Refuse images with nothing to segment; NaN/Inf voxels are left for the engine to ignore."""
    lo, hi = np.inf, -np.inf
    for plane in array:  # slice by slice: no whole-volume temporaries
        values = plane[np.isfinite(plane)] if plane.dtype.kind == "f" else plane
        if values.size:
            lo, hi = min(lo, values.min()), max(hi, values.max())
        if lo < hi:
            return
    if lo > hi:
        raise InputError(f"{path} has no finite voxel values: nothing to segment")
    raise InputError(f"{path} is constant ({float(lo):g} everywhere): nothing to segment")


def output_kind(path):
    """'segmentation' for .seg.nrrd, 'labelmap' for .nii/.nii.gz/.nrrd/.mha; InputError otherwise."""
    name = os.fspath(path).lower()
    if name.endswith(SEGMENTATION_EXTENSION):
        return "segmentation"
    if name.endswith(LABELMAP_EXTENSIONS):
        return "labelmap"
    raise InputError(
        f"output {path} has an unsupported extension: use .seg.nrrd (Slicer segmentation) "
        "or .nii, .nii.gz, .nrrd, .mha (labelmap)"
    )


def same_file(a, b):
    """Whether two paths name one file: the same spelling after resolving links, or the same
    (device, inode), which also catches hard links and bind mounts. Missing paths are never the same."""
    a, b = os.fspath(a), os.fspath(b)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def check_not_an_input(output, inputs):
    """OutputError if `output` is one of `inputs` (any spelling, symlink or hard link).

    Overwriting means replacing an earlier result, never the data it was made from; run it
    before any work, whatever the caller's overwrite option says.
    """
    for source in inputs:
        if source is not None and same_file(output, source):
            raise OutputError(
                f"output {output} is the input {source}: choose another output name "
                "(--overwrite replaces an earlier result, never an input)"
            )


def check_output_path(path, overwrite=False):
    """Raise OutputError now if `path` could not be written later: run this before any long work."""
    path = os.path.abspath(os.fspath(path))
    folder, base = os.path.split(path)
    if os.path.isdir(path):
        raise OutputError(f"output {path} is a folder")
    if os.path.lexists(path) and not overwrite:
        raise OutputError(f"output {path} exists (overwriting was not allowed)")
    if not os.path.isdir(folder):
        problem = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise OutputError(f"output folder {folder} {problem}")
    _check_name_fits(folder, base)
    # Creating a file is the only reliable test (permissions, ACLs, read-only mounts, root);
    # the probe is named like the real temporary file, so it has the same length.
    try:
        probe = _create_temp(folder, base, _extension(path))
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {exc.strerror or exc}") from None
    os.unlink(probe)
    return path


def _name_max(folder):
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _check_name_fits(folder, base):
    longest = _name_max(folder)
    length = len(os.fsencode(base))
    if length > longest:
        raise OutputError(
            f"output name {base[:40]}... is {length} bytes long; this file system allows at most {longest}"
        )


def _temp_name(folder, base, extension):
    """'.BASE.HEX.partEXT', with BASE shortened so the name fits where the output name fits."""
    tail = f".{secrets.token_hex(4)}.part{extension}"
    room = _name_max(folder) - 1 - len(os.fsencode(tail))
    stem = base
    while len(os.fsencode(stem)) > room:
        stem = stem[:-1]
    return os.path.join(folder, f".{stem}{tail}")


def _create_temp(folder, base, extension):
    """An empty new file beside the output; 0o666 so the umask gives it ordinary permissions."""
    while True:
        name = _temp_name(folder, base, extension)
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return name
        except FileExistsError:
            continue


def _extension(path):
    name = os.path.basename(path).lower()
    for extension in (SEGMENTATION_EXTENSION,) + LABELMAP_EXTENSIONS + (".json",):
        if name.endswith(extension):
            return extension
    return os.path.splitext(name)[1]


@contextlib.contextmanager
def atomic_output(path, overwrite=False):
    """Yield a temporary path in the output's folder; on success it becomes `path` in one step.

    On any failure the temporary file is removed and nothing appears under the final name.
    """
    path = check_output_path(path, overwrite)
    folder, base = os.path.split(path)
    try:
        temp = _create_temp(folder, base, _extension(path))
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {exc.strerror or exc}") from None
    try:
        yield temp
        _flush_to_disk(temp)
        _test_pause_before_rename()
        _publish(temp, path, overwrite)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)


PAUSE_BEFORE_RENAME_ENV = "MEDSAM_TEST_PAUSE_BEFORE_RENAME"


def _test_pause_before_rename():
    """Tests only: with $MEDSAM_TEST_PAUSE_BEFORE_RENAME=FILE, create FILE and wait up to a minute,
    so a test can deliver a signal between the temporary write and the rename."""
    flag = os.environ.get(PAUSE_BEFORE_RENAME_ENV)
    if flag:
        with open(flag, "w"):
            pass
        time.sleep(60)


def _flush_to_disk(temp):
    # Without this a crash right after the rename can leave an empty file under the final name.
    with contextlib.suppress(OSError):
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(temp, path, overwrite):
    if overwrite:
        os.replace(temp, path)
        return
    try:
        os.link(temp, path)  # fails if the name appeared meanwhile: never clobber without consent
    except FileExistsError:
        raise OutputError(f"output {path} exists (overwriting was not allowed)") from None
    except OSError:
        # No hard links on this file system (FAT, some network shares): check, then rename.
        if os.path.lexists(path):
            raise OutputError(f"output {path} exists (overwriting was not allowed)") from None
        os.replace(temp, path)


def _mask_image(sitk, mask_kji, reference, force_3d):
    mask = np.asarray(mask_kji)
    if mask.shape != reference.shape:
        raise InputError(f"mask shape {mask.shape} differs from the image's {reference.shape}")
    mask = (mask != 0).astype(np.uint8)
    if reference.dimension == 2 and not force_3d:
        img = sitk.GetImageFromArray(mask[0])
        img.SetSpacing(reference.spacing[:2])
        img.SetOrigin(reference.origin[:2])
        img.SetDirection(tuple(reference.direction[:2, :2].ravel()))
        return img
    img = sitk.GetImageFromArray(mask)
    img.SetSpacing(tuple(float(s) for s in reference.spacing))
    img.SetOrigin(tuple(float(o) for o in reference.origin))
    img.SetDirection(tuple(reference.direction.ravel()))
    return img


def _write(sitk, img, temp, path):
    try:
        sitk.WriteImage(img, temp, True)
    except RuntimeError as exc:
        raise OutputError(f"cannot write {path}: {_incomplete_reason(temp) or _itk_reason(exc)}") from None
    # Read it back: ITK's writers report a full disk or a file size limit only on stderr (or as a
    # read error of the truncated file), so success of WriteImage alone proves nothing.
    try:
        written = sitk.ReadImage(temp)  # kept in a name: an array view does not keep its image alive
        intact = np.array_equal(sitk.GetArrayViewFromImage(written), sitk.GetArrayViewFromImage(img))
    except RuntimeError:
        intact = False
    if not intact:
        reason = _incomplete_reason(temp) or "the file read back is incomplete (disk full or file too large?)"
        raise OutputError(f"cannot write {path}: {reason}")


def _incomplete_reason(temp):
    """'disk full' / 'file too large (...)' when that is why a write fell short, else None."""
    with contextlib.suppress(OSError):
        stats = os.statvfs(os.path.dirname(temp) or ".")
        if stats.f_bavail * stats.f_frsize < (1 << 20):
            return "disk full"
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and os.path.getsize(temp) >= limit:
            return f"file too large (this process may write files of at most {limit} bytes)"
    return None


def write_labelmap(path, mask_kji, reference, overwrite=False):
    """Write a 0/1 uint8 labelmap (.nii, .nii.gz, .nrrd, .mha) in exactly `reference`'s geometry."""
    if output_kind(path) != "labelmap":
        raise InputError(f"{path}: a labelmap needs .nii, .nii.gz, .nrrd or .mha")
    sitk = _sitk()
    img = _mask_image(sitk, mask_kji, reference, force_3d=False)
    with atomic_output(path, overwrite) as temp:
        _write(sitk, img, temp, path)


def write_seg_nrrd(path, mask_kji, reference, name, color, overwrite=False, tags=None, fields=None):
    """Write a one-segment Slicer segmentation (.seg.nrrd) over the whole reference extent.

    `color` is RGB in 0..1. `tags` (str -> str) become segment tags, e.g. the model that made it;
    `fields` (str -> str) extra NRRD key:=value header lines (Slicer ignores unknown keys).
    The header fields follow Slicer's vtkMRMLSegmentationStorageNode; always 3D (Slicer has no 2D
    segmentations), a 2D reference becomes one slice.
    """
    if output_kind(path) != "segmentation":
        raise InputError(f"{path}: a Slicer segmentation file must end in .seg.nrrd")
    name = str(name).strip()
    if not name or any(ch in name for ch in "\r\n"):
        raise InputError(f"segment name {name!r} must be one non-empty line")
    rgb = [float(c) for c in color]
    if len(rgb) != 3 or not all(0.0 <= c <= 1.0 for c in rgb):
        raise InputError(f"segment colour {tuple(color)} must be three numbers in 0..1")
    sitk = _sitk()
    img = _mask_image(sitk, mask_kji, reference, force_3d=True)
    header = _segmentation_header(sitk.GetArrayViewFromImage(img), reference, name, rgb, tags or {})
    header.update(fields or {})
    for key, value in header.items():
        img.SetMetaData(key, value)
    with atomic_output(path, overwrite) as temp:
        _write(sitk, img, temp, path)


def _segmentation_header(mask_kji, reference, name, rgb, tags):
    nonzero = np.nonzero(mask_kji)  # the segment's extent, written i0 i1 j0 j1 k0 k1
    if nonzero[0].size:
        k, j, i = ((int(a.min()), int(a.max())) for a in nonzero)
        extent = f"{i[0]} {i[1]} {j[0]} {j[1]} {k[0]} {k[1]}"
    else:
        extent = "0 -1 0 -1 0 -1"  # Slicer's empty extent
    for key, value in tags.items():
        if any(ch in f"{key}{value}" for ch in "|\r\n") or ":" in key:
            raise InputError(f"segment tag {key!r}: {value!r} may not contain '|', ':' (in the key) or line breaks")
    return {
        "Segment0_ID": "Segment_1",
        "Segment0_Name": name,
        "Segment0_NameAutoGenerated": "0",
        "Segment0_Color": " ".join(f"{c:.6g}" for c in rgb),
        "Segment0_ColorAutoGenerated": "0",
        "Segment0_LabelValue": "1",
        "Segment0_Layer": "0",
        "Segment0_Extent": extent,
        "Segment0_Tags": "".join(f"{key}:{value}|" for key, value in tags.items()),
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
        # Tells Slicer the source volume's grid, so editing the segment later stays on that grid.
        "Segmentation_ConversionParameters": (
            "Reference image geometry|" + _geometry_string(reference, mask_kji.shape[::-1])
            + "|Image geometry description string determining the geometry of the labelmap.&"
        ),
    }


def _geometry_string(reference, size):
    """Slicer's serialized image geometry: ijkToRAS row by row, then the extent, each ended by ';'."""
    values = list(reference.ijk_to_ras.ravel()) + [0, size[0] - 1, 0, size[1] - 1, 0, size[2] - 1]
    return "".join(f"{v:.17g};" for v in values)


def nrrd_header_field(path, key, limit=1 << 16):
    """The value of a `key:=value` line in a NRRD file's header, or None (unreadable, not NRRD, absent)."""
    try:
        with open(path, "rb") as f:
            head = f.read(limit)
    except OSError:
        return None
    if not head.startswith(b"NRRD"):
        return None
    prefix = f"{key}:=".encode()
    for line in head.split(b"\n\n", 1)[0].splitlines():
        if line.startswith(prefix):
            return line[len(prefix):].decode("utf-8", "replace")
    return None
