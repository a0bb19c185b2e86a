#!/usr/bin/env python3
"""Extract, from 3D Slicer's own source, the API names our Qt layer may call.

Writes Testing/data/slicer_api_names.json, which Testing/test_slicer_api_usage.py checks the
extension's Qt layer against (scripts/slicer_api_check.py), so a typo or an API that does not exist
fails CI without a Slicer application.

    python scripts/extract_slicer_api.py --slicer-git /path/to/Slicer/.git \
        --ref main --older 5.12 --older 5.10 --pytorch-git /path/to/SlicerPyTorch/.git

What is recorded, for the main ref:
- every class name of the Slicer tree (header file names under Base/, Libs/, Modules/), so that
  `slicer.<Class>` can be checked;
- for the classes listed in CLASS_ROOTS and all their Slicer base classes: the members Python can
  reach. VTK-style classes: public methods and the methods made by vtkGet/Set/BooleanMacro. QObject
  classes (PythonQt only wraps these): slots, Q_INVOKABLE methods, Q_PROPERTY names, signals; enum
  values for both; plus the class each method returns, for receiver-type inference;
- top-level names of the Python modules slicer.util, slicer.packaging, slicer.i18n and the methods of
  the Python base classes we subclass (ScriptedLoadableModule*, AbstractScriptedSegmentEditorEffect);
- for each --older ref (a release branch): which of those names it lacks, so that uses of newer API
  must be guarded.
Members of the VTK base classes (vtkObject, vtkImageData, ...) come from the installed `vtk` Python
package (its version is recorded); VTK is not Slicer's code but Slicer's objects inherit them.
"""

import argparse
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "Testing" / "data" / "slicer_api_names.json"

# The classes whose members are extracted (with their bases). Add a class here when the Qt layer
# starts to use it; the checker says which one is missing.
CLASS_ROOTS = [
    "qSlicerSegmentEditorScriptedEffect",
    "qSlicerSegmentEditorEffectFactory",
    "qMRMLSegmentEditorWidget",
    "qMRMLNodeComboBox",
    "qMRMLCheckableNodeComboBox",
    "qMRMLSliceWidget",
    "qMRMLSliceView",
    "qSlicerApplication",
    "qSlicerLayoutManager",
    "qSlicerMarkupsPlaceWidget",
    "qSlicerScriptedLoadableModule",
    "qSlicerScriptedLoadableModuleWidget",
    "vtkMRMLScene",
    "vtkMRMLScalarVolumeNode",
    "vtkMRMLSegmentationNode",
    "vtkMRMLSegmentationDisplayNode",
    "vtkMRMLSegmentEditorNode",
    "vtkMRMLMarkupsROINode",
    "vtkMRMLMarkupsDisplayNode",
    "vtkMRMLSliceNode",
    "vtkMRMLSliceLogic",
    "vtkMRMLInteractionNode",
    "vtkMRMLSelectionNode",
    "vtkMRMLTransformNode",
    "vtkSegmentation",
    "vtkSegment",
    "vtkOrientedImageData",
    "vtkOrientedImageDataResample",
    "vtkSegmentationConverter",
    "vtkSlicerSegmentationsModuleLogic",
    "vtkSlicerSegmentEditorLogic",
]

# Directories whose headers hold the classes `import slicer` exposes.
HEADER_DIRS = ("Base/", "Libs/", "Modules/")
HEADER_EXCLUDE = ("/Testing/", "Utilities/Templates/", "Extensions/", "/Resources/")

PY_MODULES = {
    "slicer.util": "Base/Python/slicer/util.py",
    "slicer.packaging": "Base/Python/slicer/packaging.py",
    "slicer.i18n": "Base/Python/slicer/i18n.py",
    "slicer.ScriptedLoadableModule": "Base/Python/slicer/ScriptedLoadableModule.py",
}
PY_CLASSES = {
    "ScriptedLoadableModule": "Base/Python/slicer/ScriptedLoadableModule.py",
    "ScriptedLoadableModuleWidget": "Base/Python/slicer/ScriptedLoadableModule.py",
    "ScriptedLoadableModuleLogic": "Base/Python/slicer/ScriptedLoadableModule.py",
    "ScriptedLoadableModuleTest": "Base/Python/slicer/ScriptedLoadableModule.py",
    "AbstractScriptedSegmentEditorEffect":
        "Modules/Loadable/Segmentations/EditorEffects/Python/SegmentEditorEffects/AbstractScriptedSegmentEditorEffect.py",
}
SLICER_INIT = "Base/Python/slicer/__init__.py"
# The catalog-entry schema our MedSAMSegment.json follows (present in Slicer 5.8 and later).
CATALOG_SCHEMA = "Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json"
MODULE_DIRS = ("Modules/Loadable/", "Modules/Scripted/", "Modules/CLI/")

VTK_MACRO_GET = re.compile(r"^vtkGet\w*Macro\s*\(\s*(\w+)")
VTK_MACRO_SET = re.compile(r"^vtkSet\w*Macro\s*\(\s*(\w+)")
VTK_MACRO_BOOL = re.compile(r"^vtkBooleanMacro\s*\(\s*(\w+)")
VTK_MACRO_CLAMP = re.compile(r"^vtkSetClampMacro\s*\(\s*(\w+)")
# Public in C++ but not wrapped for Python by VTK.
VTK_UNWRAPPED = {"New", "PrintSelf"}
ACCESS_LABEL = re.compile(r"^(public|protected|private)\s*(slots|Q_SLOTS)?$|^(signals|Q_SIGNALS)$")
# Upper-case macros with arguments in front of a declaration (VTK_DEPRECATED_IN_9_2_0("..."), ...).
ATTRIBUTE_MACRO = re.compile(r"\b[A-Z][A-Z0-9_]{2,}\s*\((?:[^()]|\([^()]*\))*\)")
NOT_A_TYPE = {"virtual", "static", "inline", "const", "explicit", "constexpr", "Q_INVOKABLE", "unsigned",
              "signed", "struct", "class", "typename", "VTK_NEWINSTANCE", "override", "final"}


class GitTree:
    """Read files of one commit of a git repository (no work tree needed)."""

    def __init__(self, gitDir, ref):
        self.gitDir = str(gitDir)
        self.commit = self._git("rev-parse", ref + "^{commit}").strip()
        self.ref = ref
        self.paths = self._git("ls-tree", "-r", "--name-only", self.commit).splitlines()
        self._cache = {}

    def _git(self, *args):
        return subprocess.run(["git", "--git-dir", self.gitDir, *args], check=True, capture_output=True,
                              text=True, encoding="utf-8", errors="replace").stdout

    def read(self, path):
        if path not in self._cache:
            self._cache[path] = self._git("show", f"{self.commit}:{path}")
        return self._cache[path]


def stripComments(text):
    """Remove comments and preprocessor lines, keep string literals (a '//' inside a URL string)."""
    pattern = re.compile(r'"(?:\\.|[^"\\])*"|/\*.*?\*/|//[^\n]*', re.S)
    text = pattern.sub(lambda m: m.group(0) if m.group(0).startswith('"') else " ", text)
    text = re.sub(r"\\\n", " ", text)
    return re.sub(r"^\s*#[^\n]*", " ", text, flags=re.M)


def matchingBrace(text, start):
    """Index just past the brace that closes the one at text[start]."""
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index + 1
    return len(text)


def popBalancedMacros(body, names):
    """Remove `NAME(...)` macros (they have no ';') and return (body, [(name, args)])."""
    found = []
    pattern = re.compile(r"\b(" + "|".join(names) + r")\b\s*\(")
    while True:
        match = pattern.search(body)
        if not match:
            return body, found
        depth, index = 0, match.end() - 1
        for index in range(match.end() - 1, len(body)):
            if body[index] == "(":
                depth += 1
            elif body[index] == ")":
                depth -= 1
                if depth == 0:
                    break
        found.append((match.group(1), body[match.end():index]))
        body = body[:match.start()] + " " + body[index + 1:]


def parseEnum(text):
    values = []
    for item in text.split(","):
        name = item.split("=")[0].strip()
        if re.fullmatch(r"[A-Za-z_]\w*", name):
            values.append(name)
    return values


def parseDeclaration(decl):
    """(name, returnType) of a method declaration, or None."""
    decl = ATTRIBUTE_MACRO.sub(" ", decl)
    if "(" not in decl or re.match(r"\s*(typedef|friend|using|template)\b", decl) or "operator" in decl:
        return None
    prefix = decl[:decl.index("(")]
    match = re.search(r"(~?[A-Za-z_]\w*)\s*$", prefix)
    if not match:
        return None
    name = match.group(1)
    words = [w for w in re.findall(r"[A-Za-z_][\w:]*", prefix[:match.start()]) if w not in NOT_A_TYPE]
    returnType = words[-1] if len(words) == 1 else None
    return name, returnType


def parseClass(header, className):
    """Members of one class declared in a header: dict with bases, qobject, members, signals, returns."""
    text = stripComments(header)
    match = re.search(r"\bclass\s+(?:[A-Za-z_]\w*\s+)*?" + className + r"\b\s*(?:final\s*)?(:[^{;]*)?\{", text)
    if not match:
        return None
    bases = [part.split()[-1] for part in (match.group(1) or ":")[1:].split(",") if part.split()]
    end = matchingBrace(text, match.end() - 1)
    body = text[match.end():end - 1]
    qobject = bool(re.search(r"\bQ_OBJECT\b", body))
    body, properties = popBalancedMacros(body, ["Q_PROPERTY"])
    body, _ = popBalancedMacros(body, ["Q_ENUMS", "Q_ENUM", "Q_FLAGS", "Q_FLAG", "Q_DECLARE_PRIVATE",
                                       "Q_DECLARE_PUBLIC", "Q_DISABLE_COPY", "Q_DECLARE_FLAGS", "Q_CLASSINFO"])
    body = re.sub(r"\bQ_OBJECT\b|\bQ_GADGET\b", " ", body)

    members, signals, returns = set(), set(), {}
    for args in (a for (_, a) in properties):
        words = args.split()
        if len(words) >= 2:
            members.add(words[1])
    access = "private"
    buffer = ""
    index = 0
    while index < len(body):
        char = body[index]
        if char == ":" and body[index + 1:index + 2] != ":" and body[index - 1:index] != ":":
            label = buffer.strip()
            if ACCESS_LABEL.match(label):
                access = label
                buffer = ""
                index += 1
                continue
        if char == "{":
            close = matchingBrace(body, index)
            stripped = buffer.strip()
            buffer = ""
            enum = re.match(r"enum\b(?:\s+class|\s+struct)?\s*(\w+)?", stripped)
            if "(" in stripped and not enum:
                # an inline method body
                recordDeclaration(stripped, access, qobject, members, signals, returns)
                index = close
                continue
            if enum and access.startswith("public"):
                members.update(parseEnum(body[index + 1:close - 1]))
                if enum.group(1):
                    members.add(enum.group(1))
            # enum, nested struct/class/union or brace-initialised member: skip up to its ';'
            semicolon = body.find(";", close)
            index = semicolon + 1 if semicolon >= 0 else len(body)
            continue
        if char == ";":
            recordDeclaration(buffer.strip(), access, qobject, members, signals, returns)
            buffer = ""
        else:
            buffer += char
        index += 1
    return {"bases": bases, "qobject": qobject, "members": members, "signals": signals, "returns": returns}


def recordDeclaration(decl, access, qobject, members, signals, returns):
    decl = " ".join(decl.split())
    if not decl:
        return
    objectGetter = re.match(r"^vtkGet(?:Object|SmartPointer)Macro\s*\(\s*(\w+)\s*,\s*(\w+)", decl)
    if objectGetter and access.startswith("public") and not qobject:
        returns["Get" + objectGetter.group(1)] = objectGetter.group(2)
    for pattern, makeNames in ((VTK_MACRO_CLAMP, lambda n: ["Set" + n, f"Get{n}MinValue", f"Get{n}MaxValue"]),
                               (VTK_MACRO_GET, lambda n: ["Get" + n]), (VTK_MACRO_SET, lambda n: ["Set" + n]),
                               (VTK_MACRO_BOOL, lambda n: [n + "On", n + "Off"])):
        match = pattern.match(decl)
        if match:
            if access.startswith("public") and not qobject:
                members.update(makeNames(match.group(1)))
            return
    parsed = parseDeclaration(decl)
    if not parsed:
        return
    name, returnType = parsed
    if name.startswith("~") or name.startswith("vtk") and name.endswith("Macro") or (not qobject and name in VTK_UNWRAPPED):
        return
    if access in ("signals", "Q_SIGNALS"):
        signals.add(name)
        return
    exposed = (access.startswith("public") if not qobject
               else "Q_INVOKABLE" in decl.split() or access in ("public slots", "public Q_SLOTS"))
    if exposed:
        members.add(name)
        if returnType and re.match(r"(vtk|q[A-Z])", returnType) and returnType != "vtkIdType":
            returns[name] = returnType


def decoratorMembers(tree, classNames):
    """{class: {member: header}} that PythonQt decorator classes add (qSlicer*PythonQtDecorators.h).

    A decorator slot `name(Class* self, ...)` adds the instance method `name` to Class, and a slot
    `static_Class_name(...)` adds the static method `name` (e.g. slicer.app.processEvents(),
    slicer.app.testingEnabled()).
    """
    added = {}
    for path in tree.paths:
        if not path.endswith("PythonQtDecorators.h") or not path.startswith(HEADER_DIRS):
            continue
        text = stripComments(tree.read(path))
        for name, firstParam in re.findall(r"\b(\w+)\s*\(\s*([^,)]*)", text):
            static = re.match(r"static_(\w+)$", name)
            if static:
                owners = [c for c in classNames if static.group(1).startswith(c + "_")]
                if owners:
                    owner = max(owners, key=len)
                    added.setdefault(owner, {})[static.group(1)[len(owner) + 1:]] = path
                continue
            paramType = re.match(r"(?:const\s+)?(\w+)\s*\*", firstParam.strip())
            if paramType and paramType.group(1) in classNames and not name.startswith(("new_", "delete_")):
                added.setdefault(paramType.group(1), {})[name] = path
    return added


def classHeaders(tree):
    headers = {}
    for path in tree.paths:
        if not path.endswith(".h") or not path.startswith(HEADER_DIRS) or any(x in path for x in HEADER_EXCLUDE):
            continue
        name = path.rsplit("/", 1)[-1][:-2]
        if re.match(r"(vtk|q)[A-Z]\w+$", name) and not name.endswith(("_p", "Export")):
            headers.setdefault(name, path)
    return headers


def extractClasses(tree, headers, roots):
    classes, pending, external = {}, list(roots), set()
    while pending:
        name = pending.pop()
        if name in classes or name in external:
            continue
        if name not in headers:
            external.add(name)
            continue
        parsed = parseClass(tree.read(headers[name]), name)
        if parsed is None:
            raise SystemExit(f"could not parse class {name} in {headers[name]}")
        parsed["header"] = headers[name]
        classes[name] = parsed
        pending.extend(parsed["bases"])
    return classes, sorted(external)


def signature(function):
    """Keyword names a call may use, and whether it takes **kwargs."""
    args = function.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return {"params": [n for n in names if n not in ("self", "cls")], "varkw": args.kwarg is not None}


def pythonTopLevelNames(source):
    """{name: signature or None} of a module's top-level definitions and imports."""
    names = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = signature(node)
        elif isinstance(node, ast.ClassDef):
            names[node.name] = None
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update((t.id, None) for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(((a.asname or a.name).split(".")[0], None) for a in node.names if a.name != "*")
    return names


def pythonClassMembers(source, className):
    """{name: signature or None} of a Python class's methods and the attributes its methods set on self."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == className:
            names = {}
            for item in ast.walk(node):
                if (isinstance(item, ast.Attribute) and isinstance(item.ctx, ast.Store)
                        and isinstance(item.value, ast.Name) and item.value.id == "self"):
                    names.setdefault(item.attr, None)
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names[item.name] = signature(item)
            return names
    raise SystemExit(f"class {className} not found")


def slicerNamespace(tree):
    """Names `import slicer` offers besides the wrapped classes."""
    names = {"app", "mrmlScene", "modules", "moduleNames"}  # set by the application (see __init__ docstring)
    names |= set(pythonTopLevelNames(tree.read(SLICER_INIT)))
    for path in tree.paths:
        match = re.match(r"Base/Python/slicer/(\w+)(?:\.py|\.py\.in|/__init__\.py)$", path)
        if match and match.group(1) != "__init__":
            names.add(match.group(1))
    return names


def coreModuleNames(tree):
    names = set()
    for path in tree.paths:
        for prefix in MODULE_DIRS:
            if path.startswith(prefix) and path.endswith("CMakeLists.txt") and path.count("/") == 3:
                names.add(path.split("/")[2].lower())
    return names


def snapshot(tree):
    headers = classHeaders(tree)
    classes, external = extractClasses(tree, headers, CLASS_ROOTS)
    for className, added in decoratorMembers(tree, set(headers)).items():
        if className in classes:
            classes[className]["members"] |= set(added)
            classes[className]["decorators"] = dict(sorted(added.items()))
    return {
        "classNames": set(headers),
        "classes": classes,
        "external": external,
        "python": {module: pythonTopLevelNames(tree.read(path)) for module, path in PY_MODULES.items()
                   if path in tree.paths},
        "pythonClasses": {name: pythonClassMembers(tree.read(path), name) for name, path in PY_CLASSES.items()},
        "slicer": slicerNamespace(tree),
        "modules": coreModuleNames(tree),
    }


def vtkBaseMembers(names):
    try:
        import vtk
    except ImportError:
        raise SystemExit("the vtk Python package is needed to list the members of VTK base classes") from None
    result = {}
    for name in names:
        cls = getattr(vtk, name, None)
        if cls is not None:
            result[name] = sorted(n for n in dir(cls) if not n.startswith("_"))
    return result, vtk.vtkVersion.GetVTKVersion()


def missingIn(main, older):
    """Names (and keyword parameters) main has and an older ref lacks."""
    missing = {}
    classNames = sorted(main["classNames"] - older["classNames"])
    if classNames:
        missing["classNames"] = classNames
    members = {}
    for name, info in main["classes"].items():
        old = older["classes"].get(name)
        lacking = sorted(info["members"] | info["signals"]) if old is None else \
            sorted((info["members"] - old["members"]) | (info["signals"] - old["signals"]))
        if lacking:
            members[name] = lacking
    if members:
        missing["members"] = members
    for key in ("python", "pythonClasses"):
        lacking, signatures = {}, {}
        for module, names in main[key].items():
            oldNames = older[key].get(module, {})
            diff = sorted(set(names) - set(oldNames))
            if diff:
                lacking[module] = diff
            for name, sig in names.items():
                oldSig = oldNames.get(name)
                if sig and oldSig and (set(sig["params"]) - set(oldSig["params"]) or sig["varkw"] > oldSig["varkw"]):
                    # the older signature, where it accepts fewer keywords
                    signatures.setdefault(module, {})[name] = oldSig
        if lacking:
            missing[key] = lacking
        if signatures:
            missing[key + "Signatures"] = signatures
    for key in ("slicer", "modules"):
        diff = sorted(main[key] - older[key])
        if diff:
            missing[key] = diff
    return missing


def extensionApi(gitDir):
    """Signatures of PyTorchUtilsLogic (fepegar/SlicerPyTorch), whose installer we call."""
    tree = GitTree(gitDir, "HEAD")
    path = "PyTorchUtils/PyTorchUtils.py"
    return {"repository": "https://github.com/fepegar/SlicerPyTorch", "commit": tree.commit, "file": path,
            "classes": {"PyTorchUtilsLogic": dict(sorted(pythonClassMembers(tree.read(path), "PyTorchUtilsLogic").items()))},
            "modules": ["pytorchutils"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slicer-git", required=True, help="git directory of a Slicer/Slicer clone")
    parser.add_argument("--ref", default="main", help="the ref whose API is recorded (Slicer Preview)")
    parser.add_argument("--older", action="append", default=[], help="older refs (release branches)")
    parser.add_argument("--pytorch-git", help="git directory of a fepegar/SlicerPyTorch clone")
    parser.add_argument("--output", default=str(OUTPUT))
    args = parser.parse_args(argv)

    mainTree = GitTree(args.slicer_git, args.ref)
    current = snapshot(mainTree)
    vtkBases, vtkVersion = vtkBaseMembers(current["external"])
    olderRefs = []
    for ref in args.older:
        tree = GitTree(args.slicer_git, ref)
        olderRefs.append({"ref": ref, "commit": tree.commit, "missing": missingIn(current, snapshot(tree))})

    data = {
        "generator": "scripts/extract_slicer_api.py",
        "repository": "https://github.com/Slicer/Slicer",
        "ref": args.ref,
        "commit": mainTree.commit,
        "older": olderRefs,
        "vtkVersion": vtkVersion,
        "classNames": sorted(current["classNames"]),
        "classes": {name: {"header": info["header"], "bases": info["bases"], "qobject": info["qobject"],
                           "members": sorted(info["members"]), "signals": sorted(info["signals"]),
                           "returns": dict(sorted(info["returns"].items())),
                           "decorators": info.get("decorators", {})}
                    for name, info in sorted(current["classes"].items())},
        "vtkBases": vtkBases,
        "python": {module: dict(sorted(names.items())) for module, names in sorted(current["python"].items())},
        "pythonFiles": PY_MODULES,
        "pythonClasses": {name: dict(sorted(names.items())) for name, names in sorted(current["pythonClasses"].items())},
        "pythonClassFiles": PY_CLASSES,
        "slicer": sorted(current["slicer"]),
        "modules": sorted(current["modules"]),
        "extensions": {"PyTorch": extensionApi(args.pytorch_git)} if args.pytorch_git else {},
        "catalogSchema": {"file": CATALOG_SCHEMA, "schema": json.loads(mainTree.read(CATALOG_SCHEMA)),
                          "presentIn": [args.ref] + [o["ref"] for o in olderRefs
                                                     if CATALOG_SCHEMA in GitTree(args.slicer_git, o["ref"]).paths]},
    }
    Path(args.output).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.output}: {len(data['classes'])} classes from {mainTree.commit[:10]}", file=sys.stderr)


if __name__ == "__main__":
    main()
