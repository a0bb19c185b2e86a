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


def predictor(model, options):
    """The process's predictor for `model` under `options`, loaded once."""
    key = (model, options.device, options.precision, options.checkpoint if model == options.checkpoint_model else None)
    with _LOCK:
        found = _PREDICTORS.get(key)
        if found is None:
            from ..predictor import Predictor

            set_threads(options.threads)
            found = _PREDICTORS[key] = Predictor(
                model, checkpoint=key[3], device=options.device, precision=options.precision,
                cache_mb=options.cache_mb,
            )
            set_threads(options.threads)  # the predictor's own tuning must not undo a worker's share
            if options.compile:
                from ..fast_vit_b import compile_encoder

                found._encoder = compile_encoder(found._encoder)
        return found


def loaded_models():
    """How many predictors this process holds (tests: a worker loads each model once)."""
    return len(_PREDICTORS)
