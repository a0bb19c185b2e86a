"""Which file the web app may write, and writing it atomically.

The app writes one file, --output, and only a Slicer segmentation (.seg.nrrd). It is never the image
(any spelling, symbolic or hard link: imageio.check_not_an_input); the --segmentation file and any
existing file are replaced only with --overwrite, except the file this app itself saved (same
device, inode, size and modification time: an inode number alone is reused by the next new file), so
Save works again after more edits. The checks run at start-up (a bad --output
fails before the server starts) and again at every Save (the file system may have changed meanwhile).
"""

import os

from ..errors import OutputError
from ..fileio import imageio


class SaveTarget:
    def __init__(self, output, image, segmentation=None, overwrite=False):
        self.output = os.path.abspath(output) if output else None
        self.image = image
        self.segmentation = segmentation
        self.overwrite = overwrite
        self.saved = None  # identity of the file the last Save wrote (_identity)

    def _mayReplace(self):
        """--overwrite, or the output is still the very file this app saved last."""
        if self.overwrite:
            return True
        try:
            return self.saved == _identity(os.stat(self.output))
        except OSError:
            return False

    def check(self):
        """OutputError unless Save may write --output now; returns the absolute output path."""
        if self.output is None:
            raise OutputError("Save needs an output file: start the app with --output FILE.seg.nrrd")
        if not self.output.lower().endswith(imageio.SEGMENTATION_EXTENSION):
            raise OutputError(f"output {self.output} must end in {imageio.SEGMENTATION_EXTENSION} "
                              "(the web app saves Slicer segmentations)")
        imageio.check_not_an_input(self.output, [self.image])
        if self.segmentation and imageio.same_file(self.output, self.segmentation) and not self.overwrite:
            raise OutputError(f"output {self.output} is the --segmentation file: add --overwrite to replace it")
        return imageio.check_output_path(self.output, self._mayReplace())

    def write(self, segmentationNode):
        """Write the segmentation in one step (a temporary file renamed over the output)."""
        from slicer import vtkMRMLSegmentationStorageNode

        path = self.check()
        with imageio.atomic_output(path, self._mayReplace()) as temp:
            storage = vtkMRMLSegmentationStorageNode()
            storage.SetFileName(temp)
            storage.SetCropToMinimumExtent(False)  # the image's full grid, as the command line writes it
            if not storage.WriteData(segmentationNode):
                raise OutputError(f"cannot write {path}: the segmentation writer failed")
        self.saved = _identity(os.stat(path))
        return path


def _identity(status):
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
