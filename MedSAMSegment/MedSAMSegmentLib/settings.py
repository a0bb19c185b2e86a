"""User settings in one Qt-free place, and the process-wide shared Predictor.

The Qt layer persists MedSAMSettings in QSettings through to_dict/from_dict (QSettings may
hand every value back as a string, so from_dict converts). The Segment Editor effect and the
module both call shared_predictor(settings) so one model and one embedding cache serve both.
"""

import threading
from dataclasses import dataclass, fields

from .engine.propagation import MODES
from .errors import InputError
from .model.device import DEVICES, PRECISIONS
from .model.registry import DEFAULT_MODEL, get_spec


@dataclass
class MedSAMSettings:
    model: str = DEFAULT_MODEL
    checkpoint: str = ""  # an explicit checkpoint file; "" = the model's embedded or cached copy
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "auto"  # auto | float32 | float16 | bfloat16 (encoder dtype)
    cache_folder: str = ""  # where downloaded weights go; "" = the platform's user cache
    cache_mb: int = 1024  # embedding-cache budget
    propagation_mode: str = "default"  # default | official

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Normalise the values in place; InputError naming the first bad one."""
        self.model = get_spec(self.model).name
        self.checkpoint = str(self.checkpoint or "").strip()
        self.cache_folder = str(self.cache_folder or "").strip()
        self.device = str(self.device or "auto").strip().lower()
        if self.device not in DEVICES:
            raise InputError(f"unknown device {self.device!r}; expected one of {', '.join(DEVICES)}")
        self.precision = str(self.precision or "auto").strip().lower()
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        self.propagation_mode = str(self.propagation_mode or "default").strip().lower()
        if self.propagation_mode not in MODES:
            raise InputError(
                f"unknown propagation mode {self.propagation_mode!r}; expected one of {', '.join(MODES)}"
            )
        try:
            self.cache_mb = int(float(self.cache_mb))
        except (TypeError, ValueError):
            raise InputError(f"embedding-cache size must be a number of MiB, got {self.cache_mb!r}") from None
        if self.cache_mb < 0:
            raise InputError(f"embedding-cache size must be 0 or more MiB, got {self.cache_mb}")
        return self

    def to_dict(self):
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, values):
        """Settings from stored values; unknown keys (other versions) are ignored, missing
        ones take their defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in dict(values or {}).items() if key in names})

    @property
    def predictor_key(self):
        return (self.model, self.checkpoint, self.device, self.precision)


_lock = threading.Lock()
_shared = {"key": None, "predictor": None}


def shared_predictor(settings=None):
    """The process-wide Predictor for these settings, created on first use (thread-safe).

    One model is kept: asking with a different (model, checkpoint, device, precision) replaces
    it, so switching models in the GUI does not leave the old one and its cache in memory
    (callers still holding the old one keep it alive until they drop it). A new cache budget
    applies to the kept predictor at once.
    """
    settings = settings or MedSAMSettings()
    with _lock:
        predictor = _shared["predictor"]
        if predictor is None or _shared["key"] != settings.predictor_key:
            from .engine.predictor import Predictor

            options = {"cache_dir": settings.cache_folder} if settings.cache_folder else {}
            predictor = Predictor(
                model=settings.model,
                checkpoint=settings.checkpoint or None,
                device=settings.device,
                precision=settings.precision,
                cache_mb=settings.cache_mb,
                **options,
            )
            _shared.update(key=settings.predictor_key, predictor=predictor)
        predictor.cache.max_bytes = settings.cache_mb * 2**20
        return predictor


def release_shared_predictor():
    """Drop the shared predictor (frees the model and its cache once no caller holds it)."""
    with _lock:
        _shared.update(key=None, predictor=None)
