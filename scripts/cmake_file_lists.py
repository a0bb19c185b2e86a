#!/usr/bin/env python3
"""Keep each module's CMakeLists.txt listing every script and resource of its folder.

slicerMacroBuildScriptedModule installs only the files listed in SCRIPTS and RESOURCES: a file
left out works from the source tree and is missing from the installed extension.

    python scripts/cmake_file_lists.py          # report differences (exit 1 if any)
    python scripts/cmake_file_lists.py --write  # rewrite the two lists in each CMakeLists.txt
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ("MedSAMSegment", "SegmentEditorMedSAM")
LISTS = {"scripts": "MODULE_PYTHON_SCRIPTS", "resources": "MODULE_PYTHON_RESOURCES"}
# Not installed as module files: the build file itself and tests registered with their own CMake.
EXCLUDED_PARTS = ("Testing", "__pycache__")
EXCLUDED_NAMES = ("CMakeLists.txt", ".gitignore", ".DS_Store")


def moduleFiles(module, root=ROOT):
    """Relative paths of the files a module folder holds (git's view: tracked, plus untracked files
    that are not ignored), split into Python scripts and other resources."""
    folder = root / module
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", module],
                                cwd=root, check=True, capture_output=True, text=True).stdout.splitlines()
        paths = [Path(p).relative_to(module) for p in listed if (root / p).is_file()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the folder
        paths = [p.relative_to(folder) for p in folder.rglob("*") if p.is_file()]
    paths = sorted({p for p in paths if p.name not in EXCLUDED_NAMES and not p.suffix == ".pyc"
                    and not any(part in EXCLUDED_PARTS for part in p.parts)})
    scripts = [p.as_posix() for p in paths if p.suffix == ".py"]
    resources = [p.as_posix() for p in paths if p.suffix != ".py"]
    return {"scripts": scripts, "resources": resources}


def _setBlock(variable, text):
    match = re.search(r"set\(\s*" + variable + r"\b(.*?)\)", text, re.S)
    if not match:
        raise ValueError(f"no set({variable} ...) block")
    return match


def listedFiles(module, root=ROOT):
    """{"scripts": [...], "resources": [...]} as listed in the module's CMakeLists.txt."""
    text = (root / module / "CMakeLists.txt").read_text(encoding="utf-8")
    name = re.search(r"set\(\s*MODULE_NAME\s+(\w+)\s*\)", text).group(1)
    result = {}
    for key, variable in LISTS.items():
        body = re.sub(r"#[^\n]*", "", _setBlock(variable, text).group(1))
        result[key] = [item.replace("${MODULE_NAME}", name) for item in body.split()]
    return result


def rewrite(module, root=ROOT):
    path = root / module / "CMakeLists.txt"
    text = path.read_text(encoding="utf-8")
    name = re.search(r"set\(\s*MODULE_NAME\s+(\w+)\s*\)", text).group(1)
    files = moduleFiles(module, root)
    for key, variable in LISTS.items():
        items = [re.sub(r"^" + re.escape(name) + r"(?=[./]|Lib/)", "${MODULE_NAME}", f) for f in files[key]]
        block = f"set({variable}\n" + "".join(f"  {item}\n" for item in items) + "  )"
        match = _setBlock(variable, text)
        text = text[:match.start()] + block + text[match.end():]
    path.write_text(text, encoding="utf-8")


def differences(module, root=ROOT):
    """Human-readable problems: files on disk not listed, listed files that do not exist."""
    problems = []
    onDisk, listed = moduleFiles(module, root), listedFiles(module, root)
    for key in LISTS:
        for missing in sorted(set(onDisk[key]) - set(listed[key])):
            problems.append(f"{module}/{missing} is not listed in {module}/CMakeLists.txt ({LISTS[key]})")
        for extra in sorted(set(listed[key]) - set(onDisk[key])):
            where = "does not exist" if not (root / module / extra).is_file() else "is listed under the wrong list"
            problems.append(f"{module}/{extra} {where} ({LISTS[key]} in {module}/CMakeLists.txt)")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the lists from the files on disk")
    args = parser.parse_args(argv)
    problems = []
    for module in MODULES:
        if args.write:
            rewrite(module)
        problems += differences(module)
    print("\n".join(problems) or "CMake file lists are complete")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
