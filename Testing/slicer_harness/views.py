"""Slice views without a GUI: real MRML slice logic and slice nodes, a real VTK interactor, stub widgets.

What is real (slicer-core / VTK): vtkMRMLSliceLogic with its vtkMRMLSliceNode and
vtkMRMLSliceCompositeNode (XYToRAS, field of view, slice offset, RotateToVolumePlane,
SnapSliceOffsetToIJK), the application logic's volume propagation and fit, and the interactor
(vtkGenericRenderWindowInteractor: event position, modifier keys, observers).
What is a stand-in: qMRMLSliceWidget / qMRMLSliceView (className(), sliceLogic(), sliceView(),
renderer, cursor, render requests) and qSlicerLayoutManager (the three standard slice views).

Two view states, as a user meets them in Slicer:
- rotated to the volume: what Slicer does when a volume is loaded (Modules/Loadable/Volumes/
  qSlicerVolumesReader.cxx, load -> vtkMRMLApplicationLogic::PropagateVolumeSelection ->
  FitSliceToContent(resetOrientation=true): SetOrientationToDefault,
  vtkMRMLSliceLogic::RotateSliceToLowestVolumeAxes(false), FitSliceToBackground,
  SnapSliceOffsetToIJK; Libs/MRML/Logic/vtkMRMLApplicationLogic.cxx);
- RAS-aligned: the views' default axial / coronal / sagittal orientation kept (after "reset
  orientation", when linked to another volume, ...): FitSliceToContent(resetOrientation=false).
"""

import numpy as np
import slicer
import vtk

# Slicer's conventional layout names and their default orientations (vtkMRMLLayoutLogic).
SLICE_VIEWS = (("Red", "Axial"), ("Green", "Coronal"), ("Yellow", "Sagittal"))


class SliceView:
    """qMRMLSliceView stand-in: a renderer for actors, the cursor, render requests."""

    def __init__(self, interactor):
        self._renderer = vtk.vtkRenderer()
        self._interactor = interactor
        self.cursor = "default"
        self.renderRequests = 0

    def renderer(self):
        return self._renderer

    def actors2D(self):
        """The 2D props an effect added (qSlicerSegmentEditorAbstractEffect::addActor2D)."""
        props = self._renderer.GetViewProps()
        return [props.GetItemAsObject(i) for i in range(props.GetNumberOfItems())]

    def interactorStyle(self):
        interactor = self._interactor

        class _Style:
            def GetInteractor(self):
                return interactor

        return _Style()

    def interactor(self):
        return self._interactor

    def setDefaultViewCursor(self, cursor):
        self.cursor = cursor

    def scheduleRender(self):
        self.renderRequests += 1

    def forceRender(self):
        self.renderRequests += 1


class SliceWidget:
    """qMRMLSliceWidget stand-in around a real slice logic."""

    def __init__(self, sliceLogic, name):
        self._sliceLogic = sliceLogic
        self._name = name
        self.interactor = vtk.vtkGenericRenderWindowInteractor()
        self._view = SliceView(self.interactor)

    def __repr__(self):
        return f"<SliceWidget {self._name} {self.mrmlSliceNode().GetOrientationString()}>"

    def className(self):
        return "qMRMLSliceWidget"

    def inherits(self, className):
        return className in ("qMRMLSliceWidget", "qMRMLAbstractViewWidget", "qMRMLWidget", "QWidget", "QObject")

    @property
    def objectName(self):
        return "qMRMLSliceWidget" + self._name

    def sliceLogic(self):
        return self._sliceLogic

    def mrmlSliceNode(self):
        return self._sliceLogic.GetSliceNode()

    def sliceView(self):
        return self._view

    def cursor(self):
        return self._view.cursor

    # -- geometry helpers for tests (Slicer's own formulas: XYToRAS of the slice node) ----------------
    def xyToRas(self, xy):
        m = slicer.util.arrayFromVTKMatrix(self.mrmlSliceNode().GetXYToRAS())
        return (m @ np.array([xy[0], xy[1], 0.0, 1.0]))[:3]

    def rasToXy(self, ras):
        """Exact (float) XY of an RAS point projected on this slice plane."""
        m = np.linalg.inv(slicer.util.arrayFromVTKMatrix(self.mrmlSliceNode().GetXYToRAS()))
        return (m @ np.array([ras[0], ras[1], ras[2], 1.0]))[:2]

    def jumpToRas(self, ras):
        """Move the slice plane through an RAS point, keeping the in-plane view (slice scrolling)."""
        self.mrmlSliceNode().JumpSliceByOffsetting(*[float(v) for v in ras])

    def normal(self):
        sliceToRas = self.mrmlSliceNode().GetSliceToRAS()
        return np.array([sliceToRas.GetElement(row, 2) for row in range(3)])

    # -- mouse ----------------------------------------------------------------------------------------
    def sendEvent(self, eventId, xy, shift=False, control=False, alt=False):
        """Set the interactor's event information, as the render window does, and invoke the event."""
        self.interactor.SetEventInformation(int(round(xy[0])), int(round(xy[1])), int(control), int(shift))
        self.interactor.SetAltKey(int(alt))
        self.interactor.InvokeEvent(eventId)

    def drag(self, startXy, endXy, steps=3, **modifiers):
        """Press at startXy, move in steps, release at endXy (left button)."""
        self.sendEvent(vtk.vtkCommand.LeftButtonPressEvent, startXy, **modifiers)
        for t in np.linspace(0.0, 1.0, steps + 1)[1:]:
            xy = (1 - t) * np.asarray(startXy, float) + t * np.asarray(endXy, float)
            self.sendEvent(vtk.vtkCommand.MouseMoveEvent, xy, **modifiers)
        self.sendEvent(vtk.vtkCommand.LeftButtonReleaseEvent, endXy, **modifiers)


class SliceViews:
    """The three standard slice views of a scene, registered with the application logic."""

    def __init__(self, core, dimensions=(400, 300)):
        self.core = core
        self.dimensions = dimensions
        self.widgets = {}
        sliceLogics = core.appLogic.GetSliceLogics()
        for name, orientation in SLICE_VIEWS:
            sliceLogic = slicer.vtkMRMLSliceLogic()
            sliceLogic.SetMRMLApplicationLogic(core.appLogic)
            sliceLogic.SetMRMLScene(core.scene)
            sliceNode = sliceLogic.AddSliceNode(name)
            sliceNode.SetDefaultOrientation(orientation)
            sliceNode.SetOrientationToDefault()
            sliceNode.SetDimensions(dimensions[0], dimensions[1], 1)
            sliceLogics.AddItem(sliceLogic)
            self.widgets[name] = SliceWidget(sliceLogic, name)

    def __getitem__(self, name):
        return self.widgets[name]

    def byOrientation(self, orientation):
        """The view whose default orientation is "Axial", "Coronal" or "Sagittal"."""
        return self.widgets[dict((o, n) for n, o in SLICE_VIEWS)[orientation]]

    def showVolume(self, volumeNode, rotateToVolume=True):
        """Show a volume in every view.

        rotateToVolume=True is what loading a volume does in Slicer: qSlicerVolumesReader::load sets
        the selection node's active volume and calls vtkMRMLApplicationLogic::PropagateVolumeSelection()
        (fit=1), which sets the background layers and runs FitSliceToContent(resetOrientation=true):
        each view is rotated to the volume's axes closest to its default orientation.
        rotateToVolume=False: background layers without the fit, then the default (RAS-aligned)
        orientations fitted without rotation (FitSliceToBackground(false, resetOrientation=false)).
        """
        appLogic = self.core.appLogic
        appLogic.GetSelectionNode().SetActiveVolumeID(volumeNode.GetID())
        if rotateToVolume:
            appLogic.PropagateVolumeSelection(1)
            return
        appLogic.PropagateVolumeSelection(0)
        for widget in self.widgets.values():
            widget.mrmlSliceNode().SetOrientationToDefault()
        appLogic.FitSliceToBackground(False, False)
        for widget in self.widgets.values():
            widget.sliceLogic().SnapSliceOffsetToIJK()

    def close(self):
        self.core.appLogic.GetSliceLogics().RemoveAllItems()
        self.widgets = {}


class LayoutManager:
    """qSlicerLayoutManager stand-in: the slice views the segment editor observes."""

    def __init__(self, views):
        self._views = views

    def sliceViewNames(self):
        return list(self._views.widgets)

    def sliceWidget(self, name):
        return self._views.widgets.get(name)

    def threeDViewCount(self):
        return 0

    def threeDWidget(self, index):
        return None
