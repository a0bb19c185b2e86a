"""A cohort manifest (CSV with a header, or JSON Lines) -> validated rows.

Two kinds of problem, kept apart on purpose:
- the manifest cannot be used (unreadable, no `image` column, neither `box_ijk` nor `roi`, an
  unknown column, two rows writing one output): ManifestError, raised before any model work;
- one row is wrong (a box that is not 6 integers, a bad colour): that row carries `error` and
  fails alone, with its reason, while the others run.
Paths: `image`, `roi` and `label` are relative to the manifest's folder, `output` to the output
folder; all are made absolute here so workers need no working directory.
"""

import csv
import json
import os
from dataclasses import dataclass, field

from ..errors import InputError

REQUIRED = ("image",)
PROMPTS = ("box_ijk", "roi")
OPTIONAL = ("name", "color", "modality", "window", "axis", "key_slice", "propagation", "model",
            "add_box_ijk", "output", "label", "label_value")
COLUMNS = REQUIRED + PROMPTS + OPTIONAL
PROPAGATIONS = ("default", "official")
DEFAULT_COLOR = (0.95, 0.35, 0.25)


class ManifestError(InputError):
    """The manifest as a whole cannot be used (exit status 2): nothing was run."""


@dataclass(frozen=True)
class Row:
    number: int  # 1-based data row, as the report and error messages name it
    image: str
    output: str
    name: str
    box_ijk: tuple = None
    roi: str = None
    color: tuple = DEFAULT_COLOR
    modality: str = None
    window: tuple = None
    axis: str = None
    key_slice: int = None
    propagation: str = "default"
    model: str = None
    add_boxes: tuple = ()  # one-slice-thick index boxes (i0 j0 k0 i1 j1 k1), corrections
    label: str = None
    label_value: int = None
    error: str = None  # set: this row fails with this reason and is not run
    extra: dict = field(default_factory=dict, compare=False)

    def parameters(self):
        """What the output depends on besides the files' content (for the fingerprint)."""
        return {
            "box_ijk": self.box_ijk, "roi": bool(self.roi), "name": self.name, "color": self.color,
            "modality": self.modality, "window": self.window, "axis": self.axis, "key_slice": self.key_slice,
            "propagation": self.propagation, "model": self.model, "add_boxes": self.add_boxes,
            "format": _format_of(self.output),
        }


def _format_of(path):
    return "segmentation" if path.lower().endswith(".seg.nrrd") else os.path.splitext(path)[1].lower()


def read_records(path):
    """(columns, list of dicts) of a CSV-with-header or JSON Lines manifest; ManifestError if unreadable."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not text.strip():
        raise ManifestError(f"manifest {path} is empty")
    if path.lower().endswith((".jsonl", ".ndjson")) or text.lstrip().startswith("{"):
        return _json_lines(path, text)
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    records = []
    for record in reader:
        if None in record:  # more cells than header names
            raise ManifestError(f"manifest {path}, line {reader.line_num}: more values than columns")
        if all(not (v or "").strip() for v in record.values()):
            continue  # blank line
        records.append({k.strip(): (v or "").strip() for k, v in record.items()})
    return columns, records


def _json_lines(path, text):
    records, columns = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"manifest {path}, line {number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ManifestError(f"manifest {path}, line {number}: each line must be a JSON object")
        columns += [c for c in record if c not in columns]
        records.append(record)
    return columns, records


def _check_columns(path, columns):
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise ManifestError(f"manifest {path}: unknown column(s) {', '.join(unknown)}; known: {', '.join(COLUMNS)}")
    if "image" not in columns:
        raise ManifestError(f"manifest {path}: the column 'image' is missing")
    if not any(c in columns for c in PROMPTS):
        raise ManifestError(f"manifest {path}: needs a 'box_ijk' or a 'roi' column")


def _numbers(value, count, what, kind=float):
    items = value if isinstance(value, (list, tuple)) else str(value).replace(",", " ").split()
    try:
        numbers = [kind(v) for v in items]
    except (TypeError, ValueError):
        raise InputError(f"{what} must be {count} numbers, got {value!r}") from None
    if len(numbers) != count:
        raise InputError(f"{what} must be {count} numbers, got {len(numbers)} ({value!r})")
    return tuple(numbers)


def _box(value, what):
    box = _numbers(value, 6, what, float)
    if any(v != int(v) for v in box):
        raise InputError(f"{what} must be whole voxel indices, got {value!r}")
    return tuple(int(v) for v in box)


def _boxes(value):
    if isinstance(value, list) and value and isinstance(value[0], (list, tuple)):
        parts = value
    else:
        parts = [p for p in str(value).split(";") if p.strip()]
    return tuple(_box(p, f"add_box_ijk {n} (boxes are separated by ';')") for n, p in enumerate(parts, 1))


def _color(value):
    rgb = _numbers(value, 3, "color")
    if any(c < 0 or c > 255 for c in rgb):
        raise InputError(f"color {value!r}: channels must be 0-1 or 0-255")
    return tuple(c / 255.0 for c in rgb) if any(c > 1 for c in rgb) else rgb


def _text(record, key):
    value = record.get(key)
    if value is None:
        return None
    value = str(value).strip() if not isinstance(value, (list, tuple)) else value
    return value if value != "" else None


def _in_folder(folder, path):
    return os.path.abspath(os.path.join(folder, os.path.expanduser(str(path))))


def _row(number, record, manifest_dir, output_dir, default_model):
    get = lambda key: _text(record, key)  # noqa: E731
    image = get("image")
    name = get("name") or f"row{number}"
    fields = {"number": number, "name": str(name),
              "image": _in_folder(manifest_dir, image) if image else "",
              "output": _in_folder(output_dir, get("output") or _default_output(image, name, number))}
    try:
        if not image:
            raise InputError("no image given")
        box, roi = get("box_ijk"), get("roi")
        if (box is None) == (roi is None):
            raise InputError("give exactly one of box_ijk and roi")
        if box is not None:
            fields["box_ijk"] = _box(box, "box_ijk")
        else:
            fields["roi"] = _in_folder(manifest_dir, roi)
        if "\n" in fields["name"] or "\r" in fields["name"]:
            raise InputError(f"name {name!r} must be one line")
        if get("color") is not None:
            fields["color"] = _color(get("color"))
        if get("modality") is not None and get("window") is not None:
            raise InputError("give modality or window, not both")
        if get("modality") is not None:
            fields["modality"] = str(get("modality")).upper()
            if fields["modality"] not in ("CT", "MR"):
                raise InputError(f"modality {get('modality')!r} must be CT or MR")
        if get("window") is not None:
            fields["window"] = _numbers(get("window"), 2, "window (LEVEL WIDTH)")
        if get("axis") is not None:
            fields["axis"] = str(get("axis")).lower()
            if fields["axis"] not in ("i", "j", "k"):
                raise InputError(f"axis {get('axis')!r} must be i, j or k")
        if get("key_slice") is not None:
            fields["key_slice"] = _numbers(get("key_slice"), 1, "key_slice", int)[0]
        fields["propagation"] = str(get("propagation") or "default").lower()
        if fields["propagation"] not in PROPAGATIONS:
            raise InputError(f"propagation {get('propagation')!r} must be default or official")
        fields["model"] = str(get("model") or default_model)
        if get("add_box_ijk") is not None:
            fields["add_boxes"] = _boxes(get("add_box_ijk"))
        if get("label") is not None:
            fields["label"] = _in_folder(manifest_dir, get("label"))
            fields["label_value"] = _numbers(get("label_value") or 1, 1, "label_value", int)[0]
        from ..fileio.imageio import output_kind

        output_kind(fields["output"])
    except InputError as exc:
        fields["error"] = str(exc)
    return Row(**fields)


def _default_output(image, name, number):
    stem = os.path.basename(str(image or "image"))
    for ext in (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".mha", ".mhd"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{stem}_{name}")
    return f"{number:04d}_{safe}.seg.nrrd"


def load_manifest(path, output_dir, default_model="litemedsam"):
    """Rows of a manifest; ManifestError when it cannot be used at all."""
    path = os.path.abspath(os.fspath(path))
    columns, records = read_records(path)
    _check_columns(path, columns)
    if not records:
        raise ManifestError(f"manifest {path} has a header but no rows")
    folder = os.path.dirname(path)
    rows = [_row(n, r, folder, os.path.abspath(os.fspath(output_dir)), default_model) for n, r in enumerate(records, 1)]
    seen = {}
    for row in rows:
        key = os.path.normcase(row.output)
        if key in seen:
            raise ManifestError(
                f"manifest {path}: rows {seen[key]} and {row.number} write the same output {row.output}"
            )
        seen[key] = row.number
    return rows
