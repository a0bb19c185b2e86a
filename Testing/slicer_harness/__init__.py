"""A Slicer-faithful harness for the MedSAM Segment Editor effect (no Slicer application needed).

Loads the effect file as Slicer does and drives it as the Segment Editor does, on real MRML
(slicer-core). Modules, each citing the Slicer source it follows:
- loading.py: setPythonSource / loadSourceAsModule, method-level imports;
- scriptedeffect.py: qSlicerSegmentEditorScriptedEffect + qSlicerSegmentEditorAbstractEffect;
- editorwidget.py: qMRMLSegmentEditorWidget (activation, view events, undo/redo);
- views.py: slice views on real vtkMRMLSliceLogic / vtkMRMLSliceNode and a real VTK interactor;
- qtstubs.py, slicerstubs.py: minimal qt / ctk / slicer GUI stand-ins;
- environment.py: installs all of it for a `with` block and restores the interpreter after;
- threadcheck.py: records Qt and MRML changes made outside the main thread;
- scenario.py: a user's session (start-up, views, editor, MedSAM active) for the effect tests;
- check_imports.py: the loading check in a fresh interpreter (test_effect_in_slicer_loading.py).
"""

from .environment import SlicerEnvironment  # noqa: F401
from .scriptedeffect import NOT_REPRODUCED  # noqa: F401
