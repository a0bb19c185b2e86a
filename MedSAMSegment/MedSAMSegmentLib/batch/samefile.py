"""Is an output path one of the cohort's input files, however it is spelled?

Two spellings are one file when their resolved paths match (relative paths, '..', symlinks,
including a symlinked folder and a dangling link that would be created through) or, for files
that exist, when device and inode match (hard links, case-insensitive file systems, bind mounts).
"""

import os


def _identity(path):
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _resolved(path):
    return os.path.normcase(os.path.realpath(path))


class InputFiles:
    """The set of input files of a cohort, to test outputs against."""

    def __init__(self):
        self._paths = {}
        self._inodes = {}

    def add(self, path, what):
        if not path:
            return
        self._paths.setdefault(_resolved(path), what)
        identity = _identity(path)
        if identity is not None:
            self._inodes.setdefault(identity, what)

    def which(self, output):
        """What input `output` is (e.g. "the image of row 3"), or None."""
        found = self._paths.get(_resolved(output))
        if found is None:
            identity = _identity(output)
            found = self._inodes.get(identity) if identity is not None else None
        return found


def cohort_inputs(rows):
    files = InputFiles()
    for row in rows:
        files.add(row.image, f"the image of row {row.number}")
        files.add(row.roi, f"the ROI of row {row.number}")
        files.add(row.label, f"the label of row {row.number}")
    return files
