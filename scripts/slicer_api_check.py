#!/usr/bin/env python3
"""Check the Slicer API names used by the extension's Qt layer against Slicer's own source.

The names come from Testing/data/slicer_api_names.json (made by scripts/extract_slicer_api.py from a
recorded Slicer commit). The Qt layer cannot run without Slicer, so this static check is what stops a
misspelt or non-existent API from reaching users.

What is checked (with `ast`, no import of the checked files):
- `slicer.<name>`: a wrapped class of the Slicer tree or a name of the `slicer` package;
- `slicer.util.<f>`, `slicer.packaging.<f>`, `slicer.i18n.<f>` and `from slicer.util import f`: defined in
  that module; keyword arguments of the calls: accepted by the function;
- `slicer.modules.<m>`: a core module, one of ours, or of the extensions we depend on;
- `<receiver>.<member>` and `<receiver>.connect("signal(...)", ...)` where the receiver's class is known:
  `scriptedEffect`, `slicer.app`, `slicer.mrmlScene`, variables assigned from `slicer.<Class>()`,
  `AddNewNodeByClass("<Class>")`, a method whose return type the header declares, or named after a class
  (NAME_HINTS: `segmentationNode`, `sliceWidget`, ...);
- `self.<method>()` in subclasses of ScriptedLoadableModule* / AbstractScriptedSegmentEditorEffect that
  the subclass does not define: defined by the Python base class;
- `PyTorchUtils.PyTorchUtilsLogic().<method>(...)` keywords (fepegar/SlicerPyTorch).
Every use of a name that an older supported Slicer (the json's "older" refs) lacks must be guarded:
inside `try:`, under `if hasattr(x, "name")`, or read with `getattr(x, "name", default)`.

`python scripts/slicer_api_check.py FILE...` prints each use with the Slicer file it was checked in.
"""

import ast
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
API_FILE = ROOT / "Testing" / "data" / "slicer_api_names.json"

# The Qt layer: every file that runs only inside Slicer (or talks to Slicer's Python API).
QT_LAYER = [
    "MedSAMSegment/MedSAMSegment.py",
    "MedSAMSegment/MedSAMSegmentLib/dependencies.py",
    "SegmentEditorMedSAM/SegmentEditorMedSAM.py",
    "SegmentEditorMedSAM/SegmentEditorMedSAMLib/*.py",
]

# A variable or attribute with one of these names holds an object of that class.
NAME_HINTS = {
    "scriptedEffect": "qSlicerSegmentEditorScriptedEffect",
    "effect": "qSlicerSegmentEditorAbstractEffect",
    "segmentEditorWidget": "qMRMLSegmentEditorWidget",
    "segmentEditorNode": "vtkMRMLSegmentEditorNode",
    "parameterSetNode": "vtkMRMLSegmentEditorNode",
    "segmentationNode": "vtkMRMLSegmentationNode",
    "previewNode": "vtkMRMLSegmentationNode",
    "previewSegmentationNode": "vtkMRMLSegmentationNode",
    "segmentationDisplayNode": "vtkMRMLSegmentationDisplayNode",
    "previewDisplayNode": "vtkMRMLSegmentationDisplayNode",
    "segmentation": "vtkSegmentation",
    "segment": "vtkSegment",
    "volumeNode": "vtkMRMLScalarVolumeNode",
    "sourceVolumeNode": "vtkMRMLScalarVolumeNode",
    "roiNode": "vtkMRMLMarkupsROINode",
    "roiDisplayNode": "vtkMRMLMarkupsDisplayNode",
    "sliceWidget": "qMRMLSliceWidget",
    "viewWidget": "qMRMLSliceWidget",
    "sliceView": "qMRMLSliceView",
    "sliceNode": "vtkMRMLSliceNode",
    "sliceLogic": "vtkMRMLSliceLogic",
    "interactionNode": "vtkMRMLInteractionNode",
    "selectionNode": "vtkMRMLSelectionNode",
    "transformNode": "vtkMRMLTransformNode",
    "parentTransformNode": "vtkMRMLTransformNode",
    "layoutManager": "qSlicerLayoutManager",
    "labelmap": "vtkOrientedImageData",
    "modifierLabelmap": "vtkOrientedImageData",
    "sourceImageData": "vtkOrientedImageData",
    "orientedImage": "vtkOrientedImageData",
    "segmentationsLogic": "vtkSlicerSegmentationsModuleLogic",
    "volumeSelector": "qMRMLNodeComboBox",
    "roiSelector": "qMRMLNodeComboBox",
    "segmentationSelector": "qMRMLNodeComboBox",
    "roiPlaceWidget": "qSlicerMarkupsPlaceWidget",
}
# PythonQt hands out objects as their run-time class: an effect returned as the abstract class is, for
# scripted effects (ours), a qSlicerSegmentEditorScriptedEffect with `self()`.
RUNTIME_SUBCLASSES = {"qSlicerSegmentEditorAbstractEffect": ["qSlicerSegmentEditorScriptedEffect"]}
KNOWN_OBJECTS = {("slicer", "app"): "qSlicerApplication", ("slicer", "mrmlScene"): "vtkMRMLScene"}
# Methods whose first (string) argument names the class of the node they return.
NODE_BY_CLASS = {"AddNewNodeByClass", "AddNewNodeByClassWithID", "CreateNodeByClass", "GetFirstNodeByClass",
                 "GetSingletonNode"}
PYTHON_MODULES = ("slicer.util", "slicer.packaging", "slicer.i18n", "slicer.ScriptedLoadableModule")
PYTHON_BASES = ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
                "ScriptedLoadableModuleTest", "AbstractScriptedSegmentEditorEffect")
OWN_MODULES = {"medsamsegment", "segmenteditormedsam"}

# Members of the Qt and CTK base classes of Slicer's widgets. Qt and CTK are not Slicer's source, so these
# are written by hand (Qt 5 / CTK documentation); add a name here only after checking it there.
QT_BASE_MEMBERS = {
    "QObject": {"connect", "disconnect", "objectName", "setObjectName", "blockSignals", "signalsBlocked",
                "deleteLater", "setProperty", "property", "parent", "inherits", "children", "findChild",
                "findChildren", "installEventFilter", "removeEventFilter", "metaObject", "className"},
    "QWidget": {"show", "hide", "setVisible", "visible", "isVisible", "enabled", "setEnabled", "isEnabled",
                "toolTip", "setToolTip", "setSizePolicy", "sizePolicy", "setMinimumWidth", "setMaximumWidth",
                "setFixedWidth", "setMinimumHeight", "setLayout", "layout", "setStyleSheet", "styleSheet",
                "update", "repaint", "width", "height", "size", "resize", "setFocus", "window", "setParent",
                "close", "setWindowTitle", "windowTitle", "setCursor", "unsetCursor", "cursor",
                "setContentsMargins", "geometry", "setGeometry", "mapToGlobal", "mapFromGlobal", "rect"},
    "QCoreApplication": {"processEvents", "quit", "exit", "applicationName", "applicationVersion",
                         "organizationName", "arguments", "instance", "sendEvent", "postEvent", "thread"},
    "QApplication": {"setOverrideCursor", "restoreOverrideCursor", "overrideCursor", "activeWindow",
                     "focusWidget", "clipboard", "style", "palette", "font", "topLevelWidgets"},
    "ctkVTKAbstractView": {"scheduleRender", "forceRender", "renderWindow", "interactor", "setRenderEnabled",
                           "renderEnabled", "backgroundColor", "setBackgroundColor"},
}
QT_BASE_SIGNALS = {
    "QObject": {"destroyed", "objectNameChanged"},
    "QWidget": {"customContextMenuRequested", "windowTitleChanged"},
}
QT_BASE_CHAIN = {"QWidget": "QObject", "QApplication": "QCoreApplication", "QCoreApplication": "QObject",
                 "QFrame": "QWidget", "ctkVTKAbstractView": "QWidget", "ctkVTKSliceView": "ctkVTKAbstractView",
                 "ctkVTKRenderView": "ctkVTKAbstractView"}


@dataclass
class Use:
    """One use of a Slicer name in a checked file."""

    file: str
    line: int
    scope: str  # class or module the name belongs to
    name: str
    source: str = ""  # Slicer file it was checked in
    guarded: bool = False
    problem: str = ""


class Api:
    """The extracted names, with lookups that walk base classes."""

    def __init__(self, path=API_FILE):
        self.data = json.loads(Path(path).read_text(encoding="utf-8"))
        self.classes = self.data["classes"]
        self.classNames = set(self.data["classNames"])
        self.slicerNames = set(self.data["slicer"])
        self.commit = self.data["commit"]

    def chain(self, className):
        """Base-class chain of a class: Slicer classes first, then VTK/Qt/CTK bases."""
        seen, pending = [], [className]
        while pending:
            name = pending.pop(0)
            if name in seen:
                continue
            seen.append(name)
            if name in self.classes:
                pending.extend(self.classes[name]["bases"])
            elif name in QT_BASE_CHAIN:
                pending.append(QT_BASE_CHAIN[name])
        return seen

    def findMember(self, className, member, signal=False):
        """(owner class, file where it was checked) or None."""
        found = self._findInChain(className, member, signal)
        for subclass in RUNTIME_SUBCLASSES.get(className, ()) if found is None else ():
            found = self._findInChain(subclass, member, signal)
        return found

    def _findInChain(self, className, member, signal):
        for name in self.chain(className):
            info = self.classes.get(name)
            if info is not None:
                names = info["signals"] if signal else set(info["members"]) | set(info["signals"])
                if member in names:
                    return name, info.get("decorators", {}).get(member, info["header"])
            elif signal and member in QT_BASE_SIGNALS.get(name, ()):
                return name, f"Qt {name} (hand-checked list)"
            elif not signal and member in self.data["vtkBases"].get(name, ()):
                return name, f"VTK {self.data['vtkVersion']} {name}"
            elif not signal and member in QT_BASE_MEMBERS.get(name, ()):
                return name, f"Qt/CTK {name} (hand-checked list)"
        return None

    def returnType(self, className, method):
        for name in self.chain(className):
            returned = self.classes.get(name, {}).get("returns", {}).get(method)
            if returned:
                return returned
        return None

    def missingIn(self, kind, scope, name):
        """Older refs (e.g. '5.8') that lack a name."""
        refs = []
        for older in self.data["older"]:
            missing = older["missing"]
            if kind == "member":
                lacking = missing.get("members", {}).get(scope, ())
            elif kind == "class":
                lacking = missing.get("classNames", ())
            elif kind == "slicer":
                lacking = list(missing.get("slicer", [])) + list(missing.get("classNames", []))
            elif kind == "python":
                lacking = missing.get("python", {}).get(scope, ())
            elif kind == "keyword":
                function, _, keyword = name.partition("(")
                oldSignature = missing.get("pythonSignatures", {}).get(scope, {}).get(function)
                lacking = [name] if oldSignature and not (oldSignature["varkw"] or keyword in oldSignature["params"]) else []
            elif kind == "pythonClass":
                lacking = missing.get("pythonClasses", {}).get(scope, ())
            else:
                lacking = ()
            if name in lacking:
                refs.append(older["ref"])
        return refs


def _dotted(node):
    """'a.b.c' for a chain of Name/Attribute nodes, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _catches(handler):
    if handler.type is None:
        return True
    names = {_dotted(t) for t in (handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type])}
    return bool(names & {"Exception", "AttributeError", "ImportError", "ModuleNotFoundError", "TypeError"})


class Checker(ast.NodeVisitor):
    """Collects Use records for one source file."""

    def __init__(self, api, filename):
        self.api = api
        self.filename = filename
        self.uses = []
        self.guards = []  # stack of (kind, data) for try / hasattr
        self.env = [{}]  # name -> class, innermost last
        self.selfTypes = {}  # attribute of self -> class (per checked class)
        self.pythonBase = None  # Python base class of the class being visited
        self.classDefined = set()
        self.utilImports = {}  # local name -> module ("slicer.util") for `from slicer.util import x`
        self.moduleAliases = {}  # `import slicer.packaging as packaging` -> {"packaging": "slicer.packaging"}

    # -- recording --------------------------------------------------------------------------------
    def record(self, node, scope, name, found, kind, missingScope=None, problem=""):
        use = Use(self.filename, getattr(node, "lineno", 0), scope, name, guarded=self.isGuarded(scope, name))
        if not found and not problem:
            problem = f"{scope}.{name} does not exist in Slicer {self.api.data['ref']} ({self.api.commit[:10]})"
        if found:
            use.source = found
            lacking = self.api.missingIn(kind, missingScope or scope, name)
            if lacking and not use.guarded:
                problem = (f"{scope}.{name} is not in Slicer {', '.join(lacking)}: guard it "
                           "(try/except, hasattr or getattr with a default) or raise the minimum version")
        use.problem = problem
        self.uses.append(use)

    def isGuarded(self, scope, name):
        """Inside try/except, or under hasattr(x, "n") where n is the name or a module on its path
        (hasattr(slicer, "packaging") guards slicer.packaging.pip_ensure)."""
        parts = set(scope.split(".")) | {name.split("(")[0]}
        for kind, data in self.guards:
            if kind == "try" or (kind == "hasattr" and parts & data):
                return True
        return False

    # -- type inference ----------------------------------------------------------------------------
    def typeOf(self, node):
        if isinstance(node, ast.Name):
            for scope in reversed(self.env):
                if node.id in scope:
                    return scope[node.id]
            return NAME_HINTS.get(node.id)
        if isinstance(node, ast.Attribute):
            base = node.value
            if isinstance(base, ast.Name) and (base.id, node.attr) in KNOWN_OBJECTS:
                return KNOWN_OBJECTS[(base.id, node.attr)]
            if isinstance(base, ast.Name) and base.id == "slicer" and node.attr in self.api.classNames:
                return node.attr  # the class itself: its static methods and enum values
            if isinstance(base, ast.Name) and base.id == "self":
                if node.attr in self.selfTypes:
                    return self.selfTypes[node.attr]
                if node.attr == "parent" and self.pythonBase == "ScriptedLoadableModule":
                    return "qSlicerScriptedLoadableModule"
            return NAME_HINTS.get(node.attr)
        if isinstance(node, ast.Call):
            func = node.func
            dotted = _dotted(func)
            if dotted and dotted.startswith("slicer.") and dotted.count(".") == 1:
                className = dotted.split(".")[1]
                if className in self.api.classNames:
                    return className
            if isinstance(func, ast.Attribute):
                if func.attr in NODE_BY_CLASS and node.args and isinstance(node.args[0], ast.Constant):
                    return node.args[0].value if isinstance(node.args[0].value, str) else None
                receiver = self.typeOf(func.value)
                if receiver:
                    return self.api.returnType(receiver, func.attr)
        return None

    def bind(self, target, value):
        valueType = self.typeOf(value)
        if valueType is None:
            return
        # A getter declared to return a base class (GetDisplayNode -> vtkMRMLDisplayNode) hands out the
        # run-time subclass; a name that says which subclass (segmentationDisplayNode) is more precise.
        name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", None)
        hint = NAME_HINTS.get(name)
        if hint and hint != valueType and valueType in self.api.chain(hint):
            valueType = hint
        if isinstance(target, ast.Name):
            self.env[-1][target.id] = valueType
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
            self.selfTypes.setdefault(target.attr, valueType)

    # -- visitors ----------------------------------------------------------------------------------
    def visit_ImportFrom(self, node):
        if node.module in PYTHON_MODULES:
            for alias in node.names:
                if alias.name == "*":
                    continue
                self.utilImports[alias.asname or alias.name] = node.module
                self.checkPythonName(node, node.module, alias.name)
        self.generic_visit(node)

    def visit_Import(self, node):
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] == "slicer" and len(parts) == 2:
                self.record(node, "slicer", parts[1], "Base/Python/slicer/" if parts[1] in self.api.slicerNames else None,
                            "slicer")
            if alias.asname and alias.name in PYTHON_MODULES:
                self.moduleAliases[alias.asname] = alias.name
        self.generic_visit(node)

    def visit_ClassDef(self, node):
        saved = (self.selfTypes, self.pythonBase, self.classDefined)
        self.selfTypes = {}
        bases = [_dotted(b) for b in node.bases]
        self.pythonBase = next((b.split(".")[-1] for b in bases if b and b.split(".")[-1] in PYTHON_BASES), None)
        self.classDefined = {item.name for item in node.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
        # self.<attr> = <expr> anywhere in the class: infer attribute types and note what the class defines.
        for item in ast.walk(node):
            if isinstance(item, ast.Assign):
                for target in item.targets:
                    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                        self.classDefined.add(target.attr)
        for _ in range(2):  # twice, so that attributes typed from other attributes resolve
            for item in ast.walk(node):
                if isinstance(item, ast.Assign) and len(item.targets) == 1 and isinstance(item.targets[0], ast.Attribute):
                    self.bind(item.targets[0], item.value)
        self.generic_visit(node)
        self.selfTypes, self.pythonBase, self.classDefined = saved

    def visit_FunctionDef(self, node):
        self.env.append({})
        self.generic_visit(node)
        self.env.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Assign(self, node):
        self.generic_visit(node)
        if len(node.targets) == 1:
            self.bind(node.targets[0], node.value)

    def visit_Try(self, node):
        guarded = any(_catches(h) for h in node.handlers)
        if guarded:
            self.guards.append(("try", None))
        for statement in node.body:
            self.visit(statement)
        if guarded:
            self.guards.pop()
        for part in node.handlers + node.orelse + node.finalbody:
            self.visit(part)

    def visit_If(self, node):
        names = {c.args[1].value for c in ast.walk(node.test)
                 if isinstance(c, ast.Call) and _dotted(c.func) == "hasattr" and len(c.args) == 2
                 and isinstance(c.args[1], ast.Constant)}
        self.visit(node.test)
        if names:
            self.guards.append(("hasattr", names))
        for statement in node.body:
            self.visit(statement)
        if names:
            self.guards.pop()
        for statement in node.orelse:
            self.visit(statement)

    def visit_Call(self, node):
        func = node.func
        dotted = _dotted(func)
        if dotted == "getattr" and len(node.args) == 3 and isinstance(node.args[1], ast.Constant):
            # getattr(obj, "name", default): a guarded use of "name"
            self.guards.append(("hasattr", {node.args[1].value}))
            self.checkAttribute(ast.Attribute(value=node.args[0], attr=node.args[1].value, lineno=node.lineno))
            self.guards.pop()
        dotted = self.resolveAlias(dotted)
        if dotted:
            module, _, function = dotted.rpartition(".")
            if module in PYTHON_MODULES:
                self.checkKeywords(node, module, function)
            elif not module and function in self.utilImports:
                self.checkKeywords(node, self.utilImports[function], function)
        if isinstance(func, ast.Attribute):
            receiver = self.typeOf(func.value)
            if func.attr == "connect" and receiver and node.args and isinstance(node.args[0], ast.Constant):
                signal = str(node.args[0].value).split("(")[0]
                found = self.api.findMember(receiver, signal, signal=True)
                self.record(node, receiver, signal, found and found[1], "member", found and found[0],
                            "" if found else f"{receiver} has no signal {signal!r}")
            if (isinstance(func.value, ast.Call) and _dotted(func.value.func) == "PyTorchUtils.PyTorchUtilsLogic"):
                self.checkExtension(node, "PyTorchUtilsLogic", func.attr)
            if (isinstance(func.value, ast.Name) and func.value.id == "self" and self.pythonBase
                    and func.attr not in self.classDefined):
                self.checkPythonBase(node, func.attr)
        self.generic_visit(node)

    def visit_Attribute(self, node):
        self.checkAttribute(node)
        self.generic_visit(node)

    # -- checks ------------------------------------------------------------------------------------
    def resolveAlias(self, dotted):
        """'packaging.pip_ensure' -> 'slicer.packaging.pip_ensure' after `import slicer.packaging as packaging`."""
        if dotted:
            head, _, rest = dotted.partition(".")
            if head in self.moduleAliases:
                return self.moduleAliases[head] + ("." + rest if rest else "")
        return dotted

    def checkAttribute(self, node):
        dotted = self.resolveAlias(_dotted(node))
        if dotted and dotted.count(".") == 1 and dotted.startswith("slicer."):
            name = node.attr
            if name in self.api.classNames:
                self.record(node, "slicer", name, f"class {name}", "class")
            else:
                self.record(node, "slicer", name, "Base/Python/slicer/__init__.py" if name in self.api.slicerNames else None,
                            "slicer")
            return
        if dotted and dotted.rpartition(".")[0] in PYTHON_MODULES:
            self.checkPythonName(node, dotted.rpartition(".")[0], node.attr)
            return
        if dotted and dotted.startswith("slicer.modules.") and dotted.count(".") == 2:
            name = node.attr
            known = set(self.api.data["modules"]) | OWN_MODULES
            for extension in self.api.data.get("extensions", {}).values():
                known |= set(extension["modules"])
            baseName = re.sub(r"(Instance|Widget)$", "", name).lower()
            found = "module list" if name in known or baseName in known else None
            self.record(node, "slicer.modules", name, found, "modules")
            return
        receiver = self.typeOf(node.value)
        if receiver is None:
            return
        if receiver not in self.api.classes:
            if receiver in self.api.classNames:
                self.record(node, receiver, node.attr, None, "member",
                            problem=f"class {receiver} is used but its members were not extracted: add it to "
                                    "CLASS_ROOTS in scripts/extract_slicer_api.py and regenerate")
            elif receiver in self.api.data["vtkBases"]:
                found = self.api.findMember(receiver, node.attr)
                self.record(node, receiver, node.attr, found and found[1], "member", receiver)
            return
        found = self.api.findMember(receiver, node.attr)
        self.record(node, receiver, node.attr, found and found[1], "member", found and found[0])

    def checkPythonName(self, node, module, name):
        names = self.api.data["python"].get(module)
        if names is None:
            return
        self.record(node, module, name, self.api.data["pythonFiles"][module] if name in names else None, "python")

    def checkKeywords(self, node, module, function):
        signature = self.api.data["python"].get(module, {}).get(function)
        if not signature:
            return
        for keyword in node.keywords:
            if keyword.arg is None:
                continue
            ok = keyword.arg in signature["params"] or signature["varkw"]
            self.record(node, module, f"{function}({keyword.arg}=)", self.api.data["pythonFiles"][module] if ok else None,
                        "keyword", problem="" if ok else f"{module}.{function}() takes no keyword {keyword.arg!r}")
            if ok:
                lacking = self.api.missingIn("keyword", module, f"{function}({keyword.arg}")
                if lacking and not self.isGuarded(module, function):
                    self.uses[-1].problem = (f"{module}.{function}({keyword.arg}=...) is not accepted by Slicer "
                                             f"{', '.join(lacking)}: guard the call")

    def checkPythonBase(self, node, method):
        members = self.api.data["pythonClasses"].get(self.pythonBase, {})
        if self.pythonBase == "ScriptedLoadableModuleTest":
            # unittest.TestCase methods (assertEqual, ...) are inherited too
            if method.startswith(("assert", "fail", "skip")) or method in ("setUp", "tearDown", "subTest", "id"):
                return
        found = self.api.data["pythonClassFiles"][self.pythonBase] if method in members else None
        self.record(node, self.pythonBase, method, found, "pythonClass")

    def checkExtension(self, node, className, method):
        extension = self.api.data.get("extensions", {}).get("PyTorch")
        if not extension:
            return
        members = extension["classes"][className]
        source = f"{extension['repository']} {extension['file']} @ {extension['commit'][:10]}"
        self.record(node, className, method, source if method in members else None, "extension")
        signature = members.get(method)
        for keyword in node.keywords if signature else ():
            ok = keyword.arg in signature["params"] or signature["varkw"]
            self.record(node, className, f"{method}({keyword.arg}=)", source if ok else None, "extension",
                        problem="" if ok else f"{className}.{method}() takes no keyword {keyword.arg!r}")


def checkSource(source, filename, api=None):
    api = api or Api()
    checker = Checker(api, filename)
    checker.visit(ast.parse(source, filename))
    return checker.uses


def qtLayerFiles(root=ROOT):
    files = []
    for pattern in QT_LAYER:
        files.extend(sorted(root.glob(pattern)))
    return files


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    api = Api()
    files = [Path(a) for a in argv] or qtLayerFiles()
    problems = 0
    seen = {}
    for path in files:
        name = str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)
        for use in checkSource(path.read_text(encoding="utf-8"), name, api):
            if use.problem:
                problems += 1
                print(f"{use.file}:{use.line}: {use.problem}")
            else:
                seen.setdefault((use.scope, use.name), (use.source, use.guarded))
    print(f"\n{len(seen)} distinct Slicer names checked against Slicer {api.data['ref']} @ {api.commit}:")
    for (scope, name), (source, guarded) in sorted(seen.items()):
        print(f"  {scope}.{name}  [{source}]{'  (guarded)' if guarded else ''}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
