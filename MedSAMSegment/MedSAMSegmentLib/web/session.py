"""One web session: the scene, the views, the MedSAM controller and every action of the page.

All tabs connected to one server share this session (one scene, one segmentation, one undo stack):
what one tab does, the others see, and a run started in one tab is the run of all of them, so a
second Preview while it goes is refused with a message, as in Slicer. Every handler runs on the
server's asyncio loop; the model runs in the controller's worker thread (effect/job.py) and is watched
from the loop (the worker wakes it when the job ends, its progress is read every POLL_SECONDS), so views and the page
stay live during a propagation.
"""

import asyncio
import logging
import os

import numpy as np

from ..errors import InputError, MedSAMError

VIEWS = (("axial", "axial_view"), ("coronal", "coronal_view"), ("sagittal", "sagittal_view"))
POLL_SECONDS = 0.05
# One JPEG quality for every frame: trame-rca's still quality (90). With a lower interactive quality it
# renders each change twice (the sharper still frame 5 frame periods later), and on a software
# renderer that second render holds the event loop, which delays the first frame's delivery too.
FRAME_QUALITY = 90
# A run's result renders the views that show its slices' axis first; the others follow this long after
# that render (time to encode its JPEG and send it), so their renders do not hold the loop before.
OTHER_VIEWS_AFTER_S = 0.03
# How long the result's frames wait for the status line to be sent before it (at most).
STATUS_FIRST_S = 0.2
# A run holds the views' frames this long at most: the result of a run on an encoded slice comes
# sooner, and the box just drawn is rendered with it, once (a frame of the box alone would take the
# CPU from the model, and the page its decoding); a longer run shows the box after this.
BOX_WITH_RESULT_S = 0.1
# The progress bar shows once a run has gone on this long: a quick preview does not flash it (its
# animation, drawn by the browser, would compete with the result's frame).
PROGRESS_AFTER_S = 0.5
# The first background pre-encoding (which loads torch and the model) starts once the views have stayed
# on their slices this long, or at once when a box is started: the first frames are rendered before it.
# Later view changes are handed over at once, so a box drawn right after a slice change finds its
# slice's encode under way.
PRE_ENCODE_SETTLE_S = 0.3
DEFAULT_SEGMENT = ("MedSAM", (1.0, 0.85, 0.0))

log = logging.getLogger(__name__)


def _hex(color):
    return "#" + "".join(f"{int(round(max(0.0, min(1.0, c)) * 255)):02x}" for c in color[:3])


def _rgb(text):
    text = text.lstrip("#")
    return [int(text[i:i + 2], 16) / 255.0 for i in (0, 2, 4)]


class WebSession:
    """The app's server-side state. settings: MedSAMSettings; logicFactory: as the controller's."""

    def __init__(self, server, imagePath, saveTarget, settings, segmentationPath=None, logicFactory=None,
                 rcaEncoder=None):
        from trame_slicer.core import SlicerApp
        from trame_slicer.rca_view import register_rca_factories
        from trame_slicer.views import ViewLayoutDefinition
        from undo_stack import UndoStack

        from ..effect.controller import MedSAMEffectController
        from .editor import TrameEditor
        from .effect import effectClasses

        self.server = server
        self.state = server.state
        self.saveTarget = saveTarget
        self.settings = settings
        self.app = SlicerApp()
        register_rca_factories(self.app.view_manager, server, slice_view_ui_f=lambda *_: None,
                               rca_encoder=rcaEncoder, interactive_quality=FRAME_QUALITY)
        self.views = {}
        for key, factory in VIEWS:
            view = self.app.view_manager.create_view(getattr(ViewLayoutDefinition, factory)())
            # No multisampling (trame-slicer asks for 8 samples): in a slice view it only smooths the
            # edges of outlines, and with Mesa's software renderer it makes every frame 3-6 times
            # dearer (711 x 866 pixels: 65-100 ms instead of 13-29 ms on 2 cores).
            view.render_window().SetMultiSamples(0)
            self.views[key] = view
        self.app.view_manager.set_current_view_ids([v.get_singleton_tag() for v in self.views.values()])

        self.volumeNode = self._loadVolume(imagePath)
        self.segmentationNode = self._loadSegmentation(segmentationPath)
        for view in self.views.values():
            view.set_background_volume_id(self.volumeNode.GetID())
        self.app.display_manager.reset_views()

        self.segmentationEditor = self.app.segmentation_editor
        self.undoStack = UndoStack(undo_limit=20)
        self.segmentationEditor.set_undo_stack(self.undoStack)
        self.segmentationEditor.set_active_segmentation(self.segmentationNode, self.volumeNode)
        self.editor = TrameEditor(self.segmentationEditor)
        self.controller = MedSAMEffectController(self.editor, settingsProvider=lambda: self.settings,
                                                 logicFactory=logicFactory, onStatus=self._onStatus)
        self.controller.setDefaults()
        effectClass, _pipeline = effectClasses()
        self.effect = self.segmentationEditor.get_effect(effectClass)
        self.effect.session = self
        self.segmentationEditor.set_active_effect(self.effect)
        for signal in self.undoStack.signals():
            signal.connect(lambda *_: self._refreshUndo())
        self.lastOutcome = None
        self.watcher = None  # the asyncio task polling the running job
        self._preEncodeWish = None  # (xyToRas, view centre) of the last view change, not yet handed over
        self._preEncodeTimer = None
        self._preEncodeStarted = False  # a first wish was handed over: the next ones go at once
        self._initState()

    # -- loading: only the files given on the command line -----------------------------------------
    def _loadVolume(self, path):
        """The image read as the command line reads it (imageio), so voxel indices, geometry and the
        saved file's grid are the command line's (Slicer's archetype reader may reverse an axis)."""
        import vtk
        from vtkmodules.util import numpy_support

        from ..fileio import imageio
        from ..mrml_bridge import mrml_io

        image = imageio.read_image(path)
        depth, rows, columns = image.array.shape
        imageData = vtk.vtkImageData()
        imageData.SetDimensions(columns, rows, depth)
        imageData.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(image.array).ravel(),
                                                                       deep=True))
        node = self.app.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", os.path.basename(path))
        node.SetIJKToRASMatrix(mrml_io.toVtkMatrix(image.ijk_to_ras))
        node.SetAndObserveImageData(imageData)
        node.CreateDefaultDisplayNodes()
        display = node.GetScalarVolumeDisplayNode()
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
        display.AutoWindowLevelOn()
        return node

    def _loadSegmentation(self, path):
        if path:
            node = self.app.segmentations_logic.LoadSegmentationFromFile(os.fspath(path), False, "Segmentation")
            if node is None:
                raise InputError(f"cannot read the segmentation {path}")
            node.CreateDefaultDisplayNodes()
        else:
            node = self.app.segmentation_editor.create_empty_segmentation_node()
            node.SetName("Segmentation")
        node.SetReferenceImageGeometryParameterFromVolumeNode(self.volumeNode)
        if node.GetSegmentation().GetNumberOfSegments() == 0:
            name, color = DEFAULT_SEGMENT
            node.GetSegmentation().AddEmptySegment("", name, color)
        return node

    # -- page state ------------------------------------------------------------------------------
    def _initState(self):
        state = self.state
        display = self.volumeNode.GetScalarVolumeDisplayNode()
        state.update({
            "status": "Draw a box around the object in a slice view", "busy": False, "error": "",
            "progress": 0, "show_progress": False, "probe": "", "model_window": "", "saved": "",
            "mode": self.controller.parameter("Mode"), "range": self.controller.parameter("Range"),
            "slices_around": int(self.controller.parameter("SlicesAround")),
            "apply_mode": self.controller.parameter("ApplyMode"),
            "intensity": self.controller.parameter("Intensity"), "add_box": False, "preview_on_release": True,
            "window": round(display.GetWindow(), 3), "level": round(display.GetLevel(), 3),
            "can_save": self.saveTarget.output is not None,
            "output": self.saveTarget.output or "(start with --output to save)",
        })
        for key, view in self.views.items():
            self._bindSlider(key, view)
        self._refreshSegments()
        self._refreshUndo()
        state.change("mode", "range", "slices_around", "apply_mode", "intensity", "add_box")(self.applyParameters)
        state.change("window", "level")(self.applyWindowLevel)
        state.change("active_segment")(self._onSelectSegment)

    def _bindSlider(self, key, view):
        """The view's slider, in slice indices of the volume, and its voxel-to-screen mapping
        (`mapping_<key>`: IJK to the render window's XY pixels, and the window size) for tests and
        benchmarks that must click on a given voxel."""
        name = f"slice_{key}"

        def fromView(*_):
            position, count, index = self._sliceIndex(view)
            self.state[f"{name}_max"] = count - 1
            self.state[name] = index
            sliceNode = view.get_view_node()
            from ..mrml_bridge import mrml_io
            from .effect import xyToRasArray

            ijkToXy = np.linalg.inv(xyToRasArray(sliceNode)) @ mrml_io.volumeIjkToWorldMatrix(self.volumeNode)
            width, height = view.render_window().GetSize()
            self.state[f"mapping_{key}"] = {"ijkToXy": ijkToXy.round(6).tolist(), "width": width, "height": height}

        def toView(**_):
            if self.state[name] is not None:
                self.setSliceIndex(key, self.state[name])

        view.modified.connect(lambda *_: fromView())
        fromView()
        self.state.change(name)(toView)

    def setSliceIndex(self, key, value):
        """Show slice `value` (a volume index, clamped) in view `key`."""
        view = self.views[key]
        position, count, index = self._sliceIndex(view)
        target = int(min(max(int(value), 0), count - 1))
        if target != index:
            self._setSliceIndex(view, position, target)

    def _sliceIndex(self, view):
        """(index axis position, slice count, current index) of a slice view on the volume."""
        from ..effect.prompts import AXIS_POSITION
        from ..engine import geometry
        from ..mrml_bridge import mrml_io
        from .effect import matrixArray

        sliceToRas = matrixArray(view.get_view_node().GetSliceToRAS())
        ijkToRas = mrml_io.volumeIjkToWorldMatrix(self.volumeNode)
        position = AXIS_POSITION[geometry.closest_index_axis(ijkToRas, sliceToRas[:3, 2])]
        count = mrml_io.volumeArray(self.volumeNode).shape[2 - position]
        ijk = np.linalg.inv(ijkToRas) @ np.r_[sliceToRas[:3, 3], 1.0]
        return position, count, int(np.rint(ijk[position]))

    def _setSliceIndex(self, view, position, index):
        from ..mrml_bridge import mrml_io
        from .effect import matrixArray

        sliceToRas = matrixArray(view.get_view_node().GetSliceToRAS())
        ijkToRas = mrml_io.volumeIjkToWorldMatrix(self.volumeNode)
        ijk = np.linalg.inv(ijkToRas) @ np.r_[sliceToRas[:3, 3], 1.0]
        ijk[position] = index
        ras = (ijkToRas @ ijk)[:3]
        normal = sliceToRas[:3, 2] / np.linalg.norm(sliceToRas[:3, 2])
        view.set_slice_value(float(normal @ ras))  # the slice offset: distance of the plane along its normal

    def _onStatus(self, text):
        self.state.status = text

    def report(self, text):
        """A message for the page (refusals, errors): shown in the status line and the error line."""
        self.state.status = text
        self.state.error = text
        self.state.flush()  # also when it answers a mouse event, which is no page trigger

    def _refreshSegments(self):
        segmentation = self.segmentationNode.GetSegmentation()
        items = []
        for index in range(segmentation.GetNumberOfSegments()):
            segmentId = segmentation.GetNthSegmentID(index)
            segment = segmentation.GetSegment(segmentId)
            items.append({"id": segmentId, "name": segment.GetName(), "color": _hex(segment.GetColor())})
        self.state.segments = items
        active = self.segmentationEditor.active_segment_id
        self.state.active_segment = active
        current = next((s for s in items if s["id"] == active), None)
        self.state.segment_name = current["name"] if current else ""
        self.state.segment_color = current["color"] if current else "#ffffff"

    def _refreshUndo(self):
        self.state.can_undo = bool(self.undoStack.can_undo())
        self.state.can_redo = bool(self.undoStack.can_redo())

    def renderAll(self):
        for view in self.views.values():
            view.schedule_render()

    # -- handlers of the page ----------------------------------------------------------------------
    def guarded(self, handler):
        """A page handler whose failures show as text in the page (never a dead page)."""

        def run(*args, **kwargs):
            try:
                self.state.error = ""
                return handler(*args, **kwargs)
            except MedSAMError as exc:
                self.report(str(exc))
            except Exception as exc:  # a bug: still a message, and the log has the traceback
                log.exception("web handler failed")
                self.report(f"Unexpected {type(exc).__name__}: {exc}")
            return None

        return run

    def applyParameters(self, **_):
        """The page's choices become the effect's parameters (on the editor node, as in Slicer)."""
        state = self.state
        for name, value in (("Mode", state.mode), ("Range", state.range), ("SlicesAround", state.slices_around),
                            ("ApplyMode", state.apply_mode), ("Intensity", state.intensity),
                            ("AddBox", "1" if state.add_box else "0")):
            if value is not None:
                self.editor.setParameter(name, str(int(value)) if name == "SlicesAround" else value)
        self.controller.dropStalePreview()
        self.renderAll()

    def applyWindowLevel(self, **_):
        """The page's window/level fields become the volume's display window/level."""
        display = self.volumeNode.GetScalarVolumeDisplayNode()
        try:
            window, level = float(self.state.window), float(self.state.level)
        except (TypeError, ValueError):
            return
        if window > 0 and (abs(display.GetWindow() - window) > 1e-6 or abs(display.GetLevel() - level) > 1e-6):
            display.AutoWindowLevelOff()
            display.SetWindowLevel(window, level)
            self.controller.dropStalePreview()  # the "view" intensity rule follows the display W/L
            self.renderAll()

    def _onSelectSegment(self, active_segment=None, **_):
        if active_segment and active_segment != self.segmentationEditor.active_segment_id:
            self.segmentationEditor.set_active_segment_id(active_segment)
            self.controller.dropStalePreview()
            self._refreshSegments()

    def addSegment(self):
        count = self.segmentationNode.GetSegmentation().GetNumberOfSegments()
        colors = [(0.2, 0.8, 0.3), (0.3, 0.5, 1.0), (1.0, 0.4, 0.7), (0.9, 0.5, 0.1)]
        self.segmentationEditor.add_empty_segment(segment_name=f"Segment {count + 1}",
                                                  segment_color=list(colors[count % len(colors)]))
        self.controller.dropStalePreview()
        self._refreshSegments()

    def renameSegment(self, name):
        self._setProperty(name=str(name).strip() or None)

    def recolorSegment(self, color):
        self._setProperty(color=_rgb(color) if color else None)

    def _setProperty(self, name=None, color=None):
        segmentId = self.segmentationEditor.active_segment_id
        properties = self.segmentationEditor.get_segment_properties(segmentId)
        if properties is None:
            raise InputError("Select a segment first")
        if name:
            properties.name = name
        if color:
            properties.color = color
        self.segmentationEditor.set_segment_properties(segmentId, properties)
        self._refreshSegments()
        self.renderAll()

    def probe(self, xyToRas, xy):
        ras = xyToRas @ np.array([xy[0], xy[1], 0.0, 1.0])
        from ..mrml_bridge import mrml_io

        rasToIjk = np.linalg.inv(mrml_io.volumeIjkToWorldMatrix(self.volumeNode))
        ijk = np.rint((rasToIjk @ ras)[:3]).astype(int)
        volume = mrml_io.volumeArray(self.volumeNode)
        i, j, k = (int(v) for v in ijk)
        if 0 <= k < volume.shape[0] and 0 <= j < volume.shape[1] and 0 <= i < volume.shape[2]:
            text = f"{i} {j} {k}  {float(volume[k, j, i]):g}"
        else:
            text = ""
        if text != self.state.probe:
            self.state.probe = text
            self.state.flush()

    def viewChanged(self, pipeline):
        """A view shows another slice: pre-encode it (the first time once the views settle)."""
        dimensions = pipeline.sliceNode().GetDimensions()
        from .effect import xyToRasArray

        self._preEncodeWish = (xyToRasArray(pipeline.sliceNode()), (dimensions[0] / 2.0, dimensions[1] / 2.0))
        if self._preEncodeStarted:
            self.preEncodeNow()
            return
        if self._preEncodeTimer is not None:
            self._preEncodeTimer.cancel()
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:  # no event loop in this thread: a session driven without its server
            self.preEncodeNow()
            return
        self._preEncodeTimer = loop.call_later(PRE_ENCODE_SETTLE_S, self.preEncodeNow)

    def preEncodeNow(self):
        """Hand the last view change to the pre-encoder now (a box is started, or the view settled)."""
        if self._preEncodeTimer is not None:
            self._preEncodeTimer.cancel()
            self._preEncodeTimer = None
        wish, self._preEncodeWish = self._preEncodeWish, None
        if wish is None:
            return
        self._preEncodeStarted = True
        try:  # never let it disturb the view
            self.controller.viewChanged(*wish)
        except Exception as exc:
            log.debug("MedSAM pre-encoding skipped: %s", exc)

    def boxDrawn(self, prompt, added):
        """After a drag: a key box added while a preview is shown updates the preview (decoder work
        only, as the Slicer effect does), after this mouse event; any other box makes the preview
        stale, and in "this slice" mode a first box previews at once (one slice is quick)."""
        if added and self.controller.previewNode() is not None:
            asyncio.get_event_loop().call_soon(self.guarded(lambda: self.run("preview")))
        else:
            if not added and self.state.preview_on_release and self.controller.parameter("Mode") == "slice":
                # Its result refills the preview on show (the controller never applies a stale one,
                # and removes it if the run ends otherwise): removing it first would render every
                # view once more while the model runs.
                self.guarded(lambda: self.run("preview"))()  # its errors show in the page too
            self.controller.dropStalePreview()  # no run started: the preview of another box goes
        self.state.flush()

    # -- runs ------------------------------------------------------------------------------------
    def run(self, action):
        """Preview or Apply: start the model in the worker thread and watch it from the loop."""
        if self.controller.busy:
            self.report("MedSAM is already running: wait for it or press Cancel")
            return None
        job = self.controller.startRun(action)
        if job is None:  # Apply of an up-to-date preview: no model work
            self._finish(None)
            return None
        self.state.busy = True
        self.state.progress = 0
        self.state.flush()
        from trame_server.utils.asynchronous import create_task

        axis = self.controller.snapshot.axis
        boxViews = self._viewsAlong(axis)
        for key in boxViews:  # until the result, at most BOX_WITH_RESULT_S
            self.views[key].set_render_blocked(True)
        held = asyncio.get_event_loop().call_later(BOX_WITH_RESULT_S, self._renderAfterHold, None, boxViews)
        # Kept, not returned: a page handler that returns an awaitable holds the page's next
        # clicks (Cancel!) until it completes.
        self.watcher = create_task(self._watch(job, axis, held))
        return None

    async def _watch(self, job, axis, held):
        # The worker wakes the loop when the job ends, so the result is shown as soon as it exists
        # rather than at the next poll; the progress bar is updated every POLL_SECONDS.
        loop = asyncio.get_running_loop()
        ended = loop.create_future()

        def wake():  # in the worker thread
            try:
                loop.call_soon_threadsafe(lambda: ended.done() or ended.set_result(None))
            except RuntimeError:  # the loop has been closed: the server stopped
                pass

        job.whenFinished(wake)
        started = loop.time()
        while not job.cancelled and not job.finished:  # a cancelled job is let go at once (job.py)
            try:
                await asyncio.wait_for(asyncio.shield(ended), POLL_SECONDS)
            except asyncio.TimeoutError:
                done, total = job.progress
                with self.state:
                    self.state.progress = int(100 * done / total) if total else 0
                    self.state.show_progress = loop.time() - started >= PROGRESS_AFTER_S
        # The views render the result only once its status line is sent: each render holds the loop
        # (the status would go after every view's frame), and the page shows the new frame with the
        # status that explains it. The views of the run's axis render first.
        held.cancel()
        for view in self.views.values():
            view.set_render_blocked(True)
        try:
            with self.state:
                self._finish(job)
            await self._sent()
        finally:
            others = self._renderAfterHold(axis)
            try:
                await asyncio.sleep(0)  # the views unblocked first render now (their render tasks were woken first)
            finally:
                asyncio.get_event_loop().call_later(OTHER_VIEWS_AFTER_S, self._renderAfterHold, None, others)

    async def _sent(self):
        """Wait (at most STATUS_FIRST_S) until what the server has published is sent."""
        monitor = self.server.context["network_monitor"]  # wslink's count of messages not yet sent; None unserved
        if monitor is not None:
            try:
                await asyncio.wait_for(monitor.completion(), STATUS_FIRST_S)
            except asyncio.TimeoutError:
                pass

    def _viewsAlong(self, axis):
        """Keys of the views showing slices along index axis `axis` ("i", "j" or "k")."""
        from ..effect.prompts import AXIS_POSITION

        return [key for key, view in self.views.items() if self._sliceIndex(view)[0] == AXIS_POSITION.get(axis)]

    def _renderAfterHold(self, axis, keys=None):
        """Unblock views held by run or _watch (each renders once): `keys`, or those along `axis`;
        returns the keys of the others. The app shows all its views all the time: unblocked is their
        state (a later run may hold them again before an earlier one's delayed release)."""
        if keys is None:
            keys = self._viewsAlong(axis)
        for key in keys:
            if key in self.views:  # not closed meanwhile
                self.views[key].set_render_blocked(False)
        return [key for key in self.views if key not in keys]

    def _finish(self, job):
        try:
            with self.editor.undoStep("MedSAM"):
                outcome = self.controller.finishRun(job)
            self.lastOutcome = outcome
            if outcome.info and outcome.info.get("window"):
                self.state.model_window = str(outcome.info["window"])
            if outcome.state == "discarded":
                self.effect.clearBoxes()
        except MedSAMError as exc:
            self.report(str(exc))
        except Exception as exc:
            log.exception("MedSAM run failed")
            self.report(f"MedSAM failed: {type(exc).__name__}: {exc}")
        finally:
            self.state.busy = False
            self.state.progress = 0
            self.state.show_progress = False
            self._refreshUndo()
            self.state.flush()  # the status line goes out before the views' frames with the result
            self.renderAll()

    def cancel(self):
        busy = self.controller.busy
        self.controller.cancel()
        if not busy:
            self.effect.clearBoxes()
        self.renderAll()

    def undo(self):
        if self.controller.busy:
            raise InputError("Wait for MedSAM or cancel it before Undo")
        self.controller.removePreview()
        self.editor.undo()
        self._refreshSegments()
        self.renderAll()

    def redo(self):
        if self.controller.busy:
            raise InputError("Wait for MedSAM or cancel it before Redo")
        self.editor.redo()
        self._refreshSegments()
        self.renderAll()

    def save(self):
        path = self.saveTarget.write(self.segmentationNode)
        self.state.saved = path
        self.state.status = f"Saved {path}"
        return path

    def shutdown(self):
        """Stop the model work (a run, pre-encoding); the views stay until close()."""
        if self._preEncodeTimer is not None:
            self._preEncodeTimer.cancel()
            self._preEncodeTimer = None
        self.controller.deactivate()

    def close(self):
        """Release the views' render windows on the thread that drew them (their GL contexts)."""
        for view in self.views.values():
            view.finalize()
        self.views.clear()
