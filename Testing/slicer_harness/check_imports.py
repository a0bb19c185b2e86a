"""Load the extension as Slicer does in a fresh interpreter, then run every method-level import of the
effect file in the loaded effect module: prints a JSON report.

    python -m slicer_harness.check_imports ROOT ORDER

ROOT: a checkout (its MedSAMSegment/ and SegmentEditorMedSAM/ folders are used, nothing else).
ORDER: "startup" (Slicer's start-up only) or "package-first" (`import SegmentEditorMedSAMLib` as a
package before start-up, as a test or the Python console may do).
A fresh interpreter per run because loading rebinds sys.modules[<folder name>] (the point of the
check) and must not leak into other tests.
"""

import json
import sys
import traceback
import types


def check(root, order):
    import slicer

    from slicer_harness import loading
    from slicer_harness.environment import EFFECT_FILE, SlicerEnvironment

    core = types.SimpleNamespace(scene=slicer.vtkMRMLScene(), appLogic=slicer.vtkSlicerApplicationLogic(),
                                 modules=types.SimpleNamespace())
    report = {"order": order, "startupError": None, "effectErrors": [], "registered": [], "imports": 0,
              "failures": []}
    with SlicerEnvironment(core, root=root, views=False) as environment:
        if order == "package-first":
            import importlib

            importlib.import_module(EFFECT_FILE[1])
        try:
            factory = environment.startSlicer()
            report["registered"] = [effect.name for effect in factory.registered]
            for effect in factory.registered:
                report["effectErrors"].extend(effect.pythonErrors)
        except Exception:
            report["startupError"] = traceback.format_exc()
        path = environment.effectPath()
        moduleName, _className = loading.moduleAndClassName(path)
        module = sys.modules.get(moduleName)
        report["imports"] = len(loading.methodImports(path))
        report["effectModuleFile"] = getattr(module, "__file__", None)
        if module is not None:
            report["failures"] = [
                {"function": f.methodImport.function, "line": f.methodImport.line,
                 "statement": f.methodImport.statement, "error": f.error}
                for f in loading.runMethodImports(module, path)
            ]
    return report


if __name__ == "__main__":
    print(json.dumps(check(sys.argv[1], sys.argv[2])))
