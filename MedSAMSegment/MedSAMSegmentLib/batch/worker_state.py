"""One predictor per model per worker process: loaded on a worker's first task, kept for the rest.

Local worker processes and Dask workers alike call `predictor(...)`; the module-level cache is
the "per-worker cache" (a Dask worker runs tasks in threads of one process, hence the lock).
"""

import threading
from dataclasses import dataclass

_PREDICTORS = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class EngineOptions:
    """How every row of a batch is computed (not per row: the same model must give the same masks)."""

    device: str = "auto"
    precision: str = "auto"
    checkpoint: str = None  # weights of `checkpoint_model`; other models use the registry's
    checkpoint_model: str = None
    cache_mb: int = 2048
    threads: int = None  # torch intra-op threads in this process (None: leave torch's choice)
    pre_encode: bool = None  # encode a row's slices in batches first (None: on CUDA only)
    compile: bool = False  # torch.compile the encoder: slow to start, faster per slice (cohorts on a GPU)


def set_threads(threads):
    if threads:
        import torch

        torch.set_num_threads(int(threads))


class CompiledEncoder:
    """--compile: the encoder under torch.compile, which compiles on the first batch. If compiling
    fails there (no compiler, a backend error), the uncompiled encoder takes over for good, with a
    note: a cohort never fails because of --compile."""

    def __init__(self, encode, device, notices):
        from ..model.fast_vit_b import compile_encoder

        self.encode, self.compiled, self.device, self.notices = encode, compile_encoder(encode), device, notices

    def __call__(self, batch):
        if self.compiled is not None:
            try:
                return self.compiled(batch)
            except Exception as exc:  # noqa: BLE001 - any compile failure: go on uncompiled
                import torch

                if isinstance(exc, torch.OutOfMemoryError):
                    raise  # the predictor's own fall-back handles memory
                self.compiled = None
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                self.notices.append(f"--compile: torch.compile of the encoder failed on {self.device} "
                                    f"({type(exc).__name__}: {first}); continuing uncompiled")
        return self.encode(batch)


CPU_COMPILE_NOTE = ("--compile is ignored on the CPU: torch.compile of the encoder fails there "
                    "(an Inductor lowering error with torch 2.13) and is meant for GPU cohorts")


def _compile(found):
    if found.device.type == "cpu":
        found.notices.append(CPU_COMPILE_NOTE)
    else:
        found._encoder = CompiledEncoder(found._encoder, found.device, found.notices)


def predictor(model, options):
    """The process's predictor for `model` under `options`, loaded once."""
    key = (model, options.device, options.precision, options.checkpoint if model == options.checkpoint_model else None,
           options.compile)  # a compiled encoder is not handed to a batch that did not ask for it, nor the reverse
    with _LOCK:
        found = _PREDICTORS.get(key)
        if found is None:
            from ..engine.predictor import Predictor

            set_threads(options.threads)
            found = _PREDICTORS[key] = Predictor(
                model, checkpoint=key[3], device=options.device, precision=options.precision,
                cache_mb=options.cache_mb,
            )
            set_threads(options.threads)  # the predictor's own tuning must not undo a worker's share
            if options.compile:
                _compile(found)
        return found


def loaded_models():
    """How many predictors this process holds (tests: a worker loads each model once)."""
    return len(_PREDICTORS)
