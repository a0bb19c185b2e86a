"""Load Python sources the way Slicer does, and run the imports an effect's methods will run.

Slicer 5.10.0 source followed:
- qSlicerSegmentEditorScriptedEffect::setPythonSource (Modules/Loadable/Segmentations/EditorEffects/
  qSlicerSegmentEditorScriptedEffect.cxx): module name = the effect file's PARENT FOLDER name
  (QDir(path).cdUp().dirName()), class name = the file's base name, "Effect" appended if missing;
  if sys.modules[moduleName] already has that class it is reused, else the file is loaded with
  loadSourceAsModule.
- qSlicerScriptedLoadableModule::setPythonSource (Base/QTGUI/qSlicerScriptedLoadableModule.cxx):
  a scripted module is loaded the same way with module name = the file's base name.
- qSlicerScriptedUtils::loadSourceAsModule (Base/QTCore/qSlicerScriptedUtils.cxx):
  `spec = importlib.util.spec_from_file_location(name, path); module = module_from_spec(spec);
  sys.modules[name] = module; spec.loader.exec_module(module)`.
- ctkFactoryScriptedItem::load (Base/QTGUI/qSlicerScriptedLoadableModuleFactory.cxx): each
  scripted module's folder is appended to sys.path (qSlicerCorePythonManager::appendPythonPath).

An import inside a method runs when the method runs, with the module's globals (its __name__,
__package__ and __spec__ decide how it resolves). `methodImports` finds them with the AST and
`runMethodImports` executes each one in a copy of the loaded module's namespace.
"""

import ast
import importlib.util
import os
import sys
from dataclasses import dataclass


def moduleAndClassName(path):
    """(module name, class name) that setPythonSource derives from an effect file's path."""
    path = path.replace("\\", "/")
    moduleName = os.path.basename(os.path.dirname(path))
    className = os.path.basename(path).split(".", 1)[0]  # QFileInfo::baseName: up to the first dot
    if not className.endswith("Effect"):
        className += "Effect"
    return moduleName, className


def classFromSysModules(moduleName, className):
    """setPythonSource's shortcut: the class of an already loaded module, if it has one."""
    module = sys.modules.get(moduleName)
    return getattr(module, className, None) if module is not None else None


def loadSourceAsModule(moduleName, path):
    """qSlicerScriptedUtils::loadSourceAsModule, statement for statement."""
    spec = importlib.util.spec_from_file_location(moduleName, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[moduleName] = module
    spec.loader.exec_module(module)
    return module


def appendModulePath(folder):
    """qSlicerCorePythonManager::appendPythonPath (append, only if absent)."""
    folder = str(folder)
    if folder not in sys.path:
        sys.path.append(folder)


@dataclass
class MethodImport:
    function: str  # qualified name of the function holding the import
    line: int
    statement: str  # the import as written


@dataclass
class ImportFailure:
    methodImport: MethodImport
    error: str


def methodImports(path):
    """Every import statement inside a function or method of a Python file (nested ones too)."""
    source = open(path, encoding="utf-8").read()
    tree = ast.parse(source, filename=path)
    found = []

    def visit(node, scope, inFunction):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, scope + [child.name], inFunction or not isinstance(child, ast.ClassDef))
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                if inFunction:
                    found.append(MethodImport(".".join(scope), child.lineno, ast.get_source_segment(source, child)))
            else:
                visit(child, scope, inFunction)

    visit(tree, [], False)
    return found


def runMethodImports(module, path):
    """Execute each method-level import of `path` with `module`'s globals: the failures."""
    failures = []
    for methodImport in methodImports(path):
        namespace = dict(vars(module))
        try:
            exec(compile(methodImport.statement.strip(), path, "exec"), namespace)
        except Exception as exc:  # ImportError mostly; anything a module import can raise
            failures.append(ImportFailure(methodImport, f"{type(exc).__name__}: {exc}"))
    return failures
