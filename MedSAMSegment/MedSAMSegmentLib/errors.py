"""Exception types: every failure a user can cause maps to one of these, with a one-line reason."""


class MedSAMError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(MedSAMError, ValueError):
    """Bad image, box, ROI or option (the caller can fix it)."""


class WeightsError(MedSAMError):
    """A checkpoint is missing, corrupt, of the wrong architecture or fails its checksum."""


class DownloadError(WeightsError):
    """A weights download failed; nothing was left under the final file name."""


class DependencyError(MedSAMError, ImportError):
    """An optional dependency (torch, segment-anything, SimpleITK, OpenCV, ...) is missing."""


class CancelledError(MedSAMError):
    """The user cancelled; nothing was written."""


class OutputError(MedSAMError):
    """The output cannot be written (exists, unwritable, disk full); nothing was left behind."""
