"""A Slicer-like Python environment for the duration of a `with` block, then everything restored.

Installs: the `qt` and `ctk` stubs, `slicer.i18n`, `slicer.ScriptedLoadableModule`, the
`SegmentEditorEffects` package, `qSlicerSegmentationsEditorEffectsPythonQt`, the Qt-side `slicer.*`
stand-ins (slicerstubs.py) and slicer.app / slicer.mrmlScene / slicer.modules for a SlicerCore
scene; appends the extension's module folders to sys.path as Slicer's module factory does.
On exit: sys.modules entries it added or replaced (the stubs, and the modules loaded from the
extension's scripted-module files) and the `slicer` attributes it set are restored, sys.path too.

`startSlicer()` reproduces the application start-up for this extension: each scripted module file is
loaded as a module named after the file (qSlicerScriptedLoadableModule::setPythonSource), its module
class is instantiated, and `startupCompleted()` is emitted (the effect registers itself then).

`processEvents()` (what slicer.app.processEvents() calls) runs the hooks tests register with
`onProcessEvents` and the stub timers: it is the only point at which a test can act "while the
effect is running", exactly where a user's click would be processed in Slicer.
"""

import os
import sys
import types
from pathlib import Path

import slicer

from . import loading, qtstubs, slicerstubs, threadcheck
from .editorwidget import SegmentEditorWidget
from .views import LayoutManager, SliceViews

REPO_ROOT = Path(__file__).resolve().parents[2]
# The extension's scripted modules: (folder, module file) in Slicer's load order (dependencies first).
SCRIPTED_MODULES = (("MedSAMSegment", "MedSAMSegment.py"), ("SegmentEditorMedSAM", "SegmentEditorMedSAM.py"))
EFFECT_FILE = ("SegmentEditorMedSAM", "SegmentEditorMedSAMLib", "SegmentEditorEffect.py")



EXTENSION_PACKAGES = ("MedSAMSegmentLib", "SegmentEditorMedSAMLib")


def _holdsExtensionPackage(entry, moduleFolders):
    """Whether a sys.path entry outside moduleFolders holds one of the extension's packages."""
    try:
        where = Path(entry or ".").resolve()
    except OSError:
        return False
    if any(where == Path(folder).resolve() for folder in moduleFolders):
        return False
    return any((where / package).is_dir() for package in EXTENSION_PACKAGES)


class SlicerEnvironment:
    def __init__(self, core, root=REPO_ROOT, views=True):
        self.core = core
        self.root = Path(root)
        self.dialogs = slicerstubs.DialogRecorder()
        self.app = slicerstubs.App(self)
        self.views = SliceViews(core) if views else None
        self.layoutManager = LayoutManager(self.views) if views else None
        self.processEventsCalls = 0
        self._hooks = []
        self._savedModules = {}
        self._savedSlicer = {}
        self._savedUtil = {}
        self._savedPath = None
        self.moduleObjects = {}  # scripted module name -> instance of its module class

    # -- paths ---------------------------------------------------------------------------------------------
    def effectPath(self):
        return str(self.root.joinpath(*EFFECT_FILE)).replace("\\", "/")

    def moduleFolders(self):
        return [str(self.root / folder) for folder, _file in SCRIPTED_MODULES]

    # -- event loop ----------------------------------------------------------------------------------------
    def onProcessEvents(self, hook):
        """Run hook() at each processEvents until it returns True."""
        self._hooks.append(hook)

    def processEvents(self):
        self.processEventsCalls += 1
        for hook in list(self._hooks):
            if hook():
                self._hooks.remove(hook)
        qtstubs.QTimer.fireDue()

    def runEventLoop(self, until, maxIterations=100000, sleep=0.005):
        """Call processEvents until until() is true (what a modal wait in Slicer would do)."""
        import time

        for _ in range(maxIterations):
            if until():
                return True
            self.processEvents()
            time.sleep(sleep)
        return until()

    # -- install / restore ---------------------------------------------------------------------------------
    def __enter__(self):
        self._savedPath = list(sys.path)
        self._knownModules = set(sys.modules)
        modules = self._stubModules()
        for name, module in modules.items():
            self._savedModules[name] = sys.modules.get(name)
            sys.modules[name] = module
        attributes = {
            "app": self.app, "mrmlScene": self.core.scene, "modules": self.core.modules,
            "i18n": modules["slicer.i18n"], "ScriptedLoadableModule": modules["slicer.ScriptedLoadableModule"],
            **slicerstubs.widgetClasses(),
        }
        missing = object()
        for name, value in attributes.items():
            self._savedSlicer[name] = getattr(slicer, name, missing)
            setattr(slicer, name, value)
        self._missing = missing
        for name, value in self.dialogs.utilFunctions().items():
            self._savedUtil[name] = getattr(slicer.util, name, missing)
            setattr(slicer.util, name, value)
        # In Slicer the extension's packages come from its module folders only. A development install
        # (this checkout's editable .pth) would shadow the tree under test when that is another one
        # (an older commit's archive), so sys.path keeps no other folder that holds them.
        folders = self.moduleFolders()
        sys.path[:] = [entry for entry in sys.path if not _holdsExtensionPackage(entry, folders)]
        for folder in folders:
            loading.appendModulePath(folder)
        qtstubs.QTimer.reset()
        qtstubs.QSettings.store = {}
        slicerstubs.EffectFactory._instance = None
        threadcheck.violations.clear()
        return self

    def __exit__(self, *exc):
        for name, value in self._savedUtil.items():
            self._restoreAttribute(slicer.util, name, value)
        for name, value in self._savedSlicer.items():
            self._restoreAttribute(slicer, name, value)
        # slicer.<effect module name> set by setPythonSource (qSlicerScriptedUtils::setModuleAttribute).
        for name in list(vars(slicer)):
            if name.startswith("SegmentEditorMedSAM"):
                delattr(slicer, name)
        for name, module in self._savedModules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        for name in set(sys.modules) - self._knownModules:
            if self._fromExtensionScripts(sys.modules[name]):
                del sys.modules[name]
        sys.path[:] = self._savedPath
        qtstubs.QTimer.reset()
        slicerstubs.EffectFactory._instance = None
        if self.views is not None:
            self.views.close()
        return False

    def _restoreAttribute(self, owner, name, value):
        if value is self._missing:
            if hasattr(owner, name):
                delattr(owner, name)
        else:
            setattr(owner, name, value)

    def _fromExtensionScripts(self, module):
        """Modules that hold stub classes: the scripted-module files and what lives beside them
        (MedSAMSegmentLib is Qt-free and stays imported)."""
        path = getattr(module, "__file__", None) or ""
        scripted = [str(self.root / folder) for folder, _file in SCRIPTED_MODULES]
        return any(os.path.dirname(path) == folder or path.startswith(folder + os.sep + "SegmentEditorMedSAMLib")
                   for folder in scripted) if path else module.__name__.startswith("SegmentEditorMedSAM")

    def _stubModules(self):
        i18n = types.ModuleType("slicer.i18n")
        i18n.tr = lambda text: text
        i18n.translate = lambda context, text: text
        scripted = types.ModuleType("slicer.ScriptedLoadableModule")
        for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
                     "ScriptedLoadableModuleTest"):
            setattr(scripted, name, getattr(slicerstubs, name))
        effects = types.ModuleType("SegmentEditorEffects")
        effects.__path__ = []  # a package, as in Slicer
        effects.AbstractScriptedSegmentEditorEffect = slicerstubs.AbstractScriptedSegmentEditorEffect
        effects.AbstractScriptedSegmentEditorLabelEffect = slicerstubs.AbstractScriptedSegmentEditorEffect
        abstractModule = types.ModuleType("SegmentEditorEffects.AbstractScriptedSegmentEditorEffect")
        abstractModule.AbstractScriptedSegmentEditorEffect = slicerstubs.AbstractScriptedSegmentEditorEffect
        pythonQt = types.ModuleType("qSlicerSegmentationsEditorEffectsPythonQt")
        pythonQt.qSlicerSegmentEditorScriptedEffect = slicerstubs.widgetClasses()["qSlicerSegmentEditorScriptedEffect"]
        return {"qt": qtstubs.makeQtModule(), "ctk": qtstubs.makeCtkModule(), "slicer.i18n": i18n,
                "slicer.ScriptedLoadableModule": scripted, "SegmentEditorEffects": effects,
                "SegmentEditorEffects.AbstractScriptedSegmentEditorEffect": abstractModule,
                "qSlicerSegmentationsEditorEffectsPythonQt": pythonQt}

    # -- application start-up and the Segment Editor ---------------------------------------------------------
    def startSlicer(self):
        """Load the extension's scripted modules as Slicer does, then emit startupCompleted()."""
        for folder, fileName in SCRIPTED_MODULES:
            path = str(self.root / folder / fileName)
            moduleName = os.path.splitext(fileName)[0]
            module = sys.modules.get(moduleName)
            if module is None or not hasattr(module, moduleName):
                module = loading.loadSourceAsModule(moduleName, path)
            parent = slicerstubs.ModuleParent()
            self.moduleObjects[moduleName] = getattr(module, moduleName)(parent)
        self.app.emit("startupCompleted")
        return slicer.qSlicerSegmentEditorEffectFactory.instance()

    def segmentEditor(self, segmentationNode, volumeNode, maximumNumberOfUndoStates=10):
        """A Segment Editor on a new editor node, with its effects, segmentation and source volume."""
        widget = SegmentEditorWidget(self, maximumNumberOfUndoStates)
        editorNode = self.core.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode", "SegmentEditor")
        widget.updateEffectList()
        widget.setMRMLSegmentEditorNode(editorNode)
        widget.setSegmentationNode(segmentationNode)
        widget.setSourceVolumeNode(volumeNode)
        return widget
