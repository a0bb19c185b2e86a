"""The MedSAM box tool as a trame-slicer segmentation effect.

trame-slicer's SegmentationEditor creates one pipeline of the active effect per view; the layered
displayable manager hands each pipeline the view's VTK interactor events (ProcessInteractionEvent).
The pipeline turns a left-button drag into the controller's press / move / release with the slice
node's XY-to-RAS matrix, exactly as the Slicer effect does with its qMRMLSliceWidget, and draws the
rectangle with the same RubberBand actor. What the box means is decided by the controller.

The classes are built by a function: trame-slicer and slicer-core are imported only when the web app
starts, never by the core package.
"""

from functools import lru_cache

import numpy as np


def matrixArray(vtkMatrix):
    return np.array([[vtkMatrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def xyToRasArray(sliceNode):
    """The slice node's XY-to-RAS matrix as a 4x4 numpy array."""
    return matrixArray(sliceNode.GetXYToRAS())


@lru_cache(maxsize=1)
def effectClasses():
    """(MedSAMWebEffect, MedSAMBoxPipeline), created on first use."""
    from slicer import vtkMRMLSliceNode
    from trame_slicer.segmentation import SegmentationEffect, SegmentationEffectPipeline
    from vtkmodules.vtkCommonCore import vtkCommand

    from ..effect.rubberband import RubberBand
    from ..errors import InputError

    PRESS, MOVE, RELEASE = (int(vtkCommand.LeftButtonPressEvent), int(vtkCommand.MouseMoveEvent),
                            int(vtkCommand.LeftButtonReleaseEvent))
    SHIFT = 1  # vtkEvent::ShiftModifier

    class MedSAMBoxPipeline(SegmentationEffectPipeline):
        """One slice view's box drawing: the first box and the added key-slice boxes."""

        def __init__(self):
            super().__init__()
            self.bands = {}  # key slice (None: the first box) -> RubberBand
            self._renderer = None
            self._shiftDrag = False

        # -- what the effect and the session see --------------------------------------------------
        @property
        def viewKey(self):
            return self.GetViewNode().GetName() if self.GetViewNode() else ""

        def sliceNode(self):
            return self.GetViewNode()

        def sliceOffset(self):
            return self._view.get_slice_value() if self._view is not None else 0.0

        def rasToXy(self, ras):
            xyToRas = xyToRasArray(self.sliceNode())
            xy = np.linalg.solve(xyToRas, np.array([ras[0], ras[1], ras[2], 1.0]))
            return float(xy[0]), float(xy[1])

        def band(self, keySlice):
            if keySlice not in self.bands:
                self.bands[keySlice] = RubberBand()
                if self._renderer is not None:
                    self._renderer.AddViewProp(self.bands[keySlice].actor)
            return self.bands[keySlice]

        def clearBands(self):
            shown = [band for band in self.bands.values() if band.actor.GetVisibility()]
            for band in shown:
                band.clear()
            if shown:  # a view with nothing to clear is not rendered again (a box drawn in another view)
                self.RequestRender()

        def repositionBands(self):
            offset = self.sliceOffset()
            for band in self.bands.values():
                band.reposition(self.rasToXy, offset)

        # -- layered displayable manager hooks ----------------------------------------------------
        def OnRendererAdded(self, renderer):
            self._renderer = renderer
            for band in self.bands.values():
                renderer.AddViewProp(band.actor)

        def OnRendererRemoved(self, renderer):
            for band in self.bands.values():
                renderer.RemoveViewProp(band.actor)
            self._renderer = None

        def OnUpdate(self, obj, eventId, callData):
            super().OnUpdate(obj, eventId, callData)
            if obj is not None and obj == self.GetViewNode():
                self.repositionBands()
                if self._effect is not None:
                    self._effect.viewChanged(self)

        def LoseFocus(self, eventData):
            super().LoseFocus(eventData)
            if self._effect is not None and self._effect.controller is not None:
                self._effect.controller.abandonDrag(self.viewKey)

        def CanProcessInteractionEvent(self, eventData):
            return bool(self.IsActive()) and eventData.GetType() in (PRESS, MOVE, RELEASE), 0.0

        def ProcessInteractionEvent(self, eventData):
            effect = self._effect
            if effect is None or effect.controller is None:
                return False
            xy = tuple(eventData.GetDisplayPosition())
            kind = eventData.GetType()
            if kind == PRESS:
                self._shiftDrag = bool(eventData.GetModifiers() & SHIFT)
                if effect.press(self, xy):
                    band = self.band(None) if not self._shiftDrag else self.band("drag")
                    band.start(xy)
                    self.RequestRender()
                return True  # a refused press is answered in the status, never passed to the view
            if kind == MOVE:
                effect.probe(self, xy)
                if not effect.controller.dragging(self.viewKey):
                    return False
                band = self.band("drag") if self._shiftDrag else self.band(None)
                band.setXy(band.startXy, xy)
                self.RequestRender()
                return True
            if kind == RELEASE and effect.controller.dragging(self.viewKey):
                band = self.band("drag") if self._shiftDrag else self.band(None)
                corners = [self._xyToRas(c) for c in band.displayCorners(xy)]
                band.clear()
                effect.release(self, xy, corners, self._shiftDrag)
                self.RequestRender()
                return True
            return False

        def _xyToRas(self, xy):
            return (xyToRasArray(self.sliceNode()) @ np.array([xy[0], xy[1], 0.0, 1.0]))[:3]

        def showBox(self, keySlice, rasCorners):
            band = self.band(keySlice)
            band.finish(rasCorners, self.sliceOffset())
            band.reposition(self.rasToXy, self.sliceOffset())
            self.RequestRender()

    class MedSAMWebEffect(SegmentationEffect):
        """The MedSAM tool of the web app. `session` (set by the app) owns the controller."""

        session = None

        @property
        def controller(self):
            return self.session.controller if self.session is not None else None

        def _create_pipeline(self, viewNode, parameter):
            if isinstance(viewNode, vtkMRMLSliceNode):
                return MedSAMBoxPipeline()
            return None  # no boxes in 3D

        def livePipelines(self):
            return [p for p in (ref() for ref in self._pipelines) if p is not None]

        def press(self, pipeline, xy):
            self.session.preEncodeNow()  # the box will need the slice in view: its encode starts now
            if self.controller.press(pipeline.viewKey, xy):
                return True
            self.session.report("MedSAM is running: wait for it or press Cancel before drawing a new box")
            return False

        def release(self, pipeline, xy, rasCorners, shift):
            try:
                prompt, added = self.controller.release(pipeline.viewKey, xy, xyToRasArray(pipeline.sliceNode()),
                                                        addBox=True if shift else None)
            except InputError as exc:
                self.session.report(str(exc))
                return
            self.session.boxDrawn(prompt, added)  # first: a run it starts renders the box with its result
            if not added:
                for other in self.livePipelines():
                    other.clearBands()
                pipeline.showBox(None, rasCorners)
            else:
                pipeline.showBox(prompt.keySlice, rasCorners)

        def probe(self, pipeline, xy):
            self.session.probe(xyToRasArray(pipeline.sliceNode()), xy)

        def viewChanged(self, pipeline):
            self.session.viewChanged(pipeline)

        def clearBoxes(self):
            for pipeline in self.livePipelines():
                pipeline.clearBands()

    return MedSAMWebEffect, MedSAMBoxPipeline
