"""Which file the web app may write, and writing it atomically.

The app writes one file, --output, and only a Slicer segmentation (.seg.nrrd). It is never the image
(any spelling, symbolic or hard link: imageio.check_not_an_input); the --segmentation file and any
existing file are replaced only with --overwrite. The checks run at start-up (a bad --output fails
before the server starts) and again at every Save (the file system may have changed meanwhile).
"""

import os

from .. import imageio
from ..errors import OutputError


class SaveTarget:
    def __init__(self, output, image, segmentation=None, overwrite=False):
        self.output = os.path.abspath(output) if output else None
        self.image = image
        self.segmentation = segmentation
        self.overwrite = overwrite

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
        return imageio.check_output_path(self.output, self.overwrite)

    def write(self, segmentationNode):
        """Write the segmentation in one step (a temporary file renamed over the output)."""
        from slicer import vtkMRMLSegmentationStorageNode

        path = self.check()
        with imageio.atomic_output(path, self.overwrite) as temp:
            storage = vtkMRMLSegmentationStorageNode()
            storage.SetFileName(temp)
            storage.SetCropToMinimumExtent(False)  # the image's full grid, as the command line writes it
            if not storage.WriteData(segmentationNode):
                raise OutputError(f"cannot write {path}: the segmentation writer failed")
        return path
