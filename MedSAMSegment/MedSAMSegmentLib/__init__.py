"""Qt-free core of the MedSAMSegment extension.

Importing this package is cheap: torch, SimpleITK and OpenCV are imported inside the
functions that need them, so Slicer can load the module before dependencies are installed.
"""

__version__ = "0.1.0"
