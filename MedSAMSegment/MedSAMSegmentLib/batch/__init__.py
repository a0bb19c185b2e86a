"""Cohorts: segment the rows of a manifest, resumably, here, in local processes or on Dask.

    from MedSAMSegmentLib.batch import run_batch
    result = run_batch("cohort.csv", "out/", workers=2)
    result.exit_status, result.summary, result.rows

Files: manifest (columns, validation), fingerprint + ledger (resume), samefile (outputs that are
inputs), plan (what to run), image_task (one image's rows), worker_state (one model per worker),
local_pool / dask_runner (where tasks run), segfile (--group-by-image), report, progress,
command (the `batch` sub-command).
"""

from .api import EXIT_INTERRUPTED, EXIT_OK, EXIT_ROWS_FAILED, EXIT_USAGE, BatchResult, run_batch
from .manifest import COLUMNS, ManifestError

__all__ = ["run_batch", "BatchResult", "ManifestError", "COLUMNS", "EXIT_OK", "EXIT_ROWS_FAILED", "EXIT_USAGE",
           "EXIT_INTERRUPTED"]
