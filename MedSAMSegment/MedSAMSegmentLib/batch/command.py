"""The `medsam-segment batch` sub-command: arguments -> run_batch -> exit status 0, 3 (rows
failed) or 2 (the manifest cannot be used; raised as an InputError for cli.main to map)."""


def add_parser(commands, add_common):
    from ..model.registry import DEFAULT_MODEL, known_models

    batch = commands.add_parser(
        "batch",
        help="segment every row of a manifest (CSV or JSON Lines), resumably",
        description="Segment a cohort: one row per object (image + box or ROI). Rows on one image share its "
        "read and its slice embeddings; outputs that are up to date are skipped; a failing row fails alone. "
        "Exit status: 0 all rows done, 3 some rows failed, 2 the manifest cannot be used.",
    )
    batch.add_argument("manifest", help="CSV with a header, or JSON Lines (.jsonl); see the README for the columns")
    batch.add_argument("--output-dir", "-o", required=True, metavar="DIR",
                       help="folder for the outputs and the report (created if missing)")
    where = batch.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=1, metavar="N",
                       help="local worker processes, sharing the CPU threads (default: 1, in this process)")
    where.add_argument("--dask-local", type=int, metavar="N", help="start a Dask LocalCluster of N processes")
    where.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://host:8786")
    batch.add_argument("--group-by-image", action="store_true",
                       help="one multi-segment .seg.nrrd per image instead of one file per row")
    batch.add_argument("--model", choices=known_models(), default=DEFAULT_MODEL,
                       help="model of rows without a 'model' column (default: %(default)s)")
    batch.add_argument("--checkpoint", metavar="PATH", help="weights file of --model")
    batch.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="default: %(default)s")
    batch.add_argument("--compile", action="store_true",
                       help="torch.compile the image encoder: tens of seconds to start, faster per slice (GPU "
                       "cohorts). Ignored with a note on the CPU, where compiling it fails; where compiling fails "
                       "on a GPU, the batch goes on uncompiled, with a note")
    add_common(batch)
    batch.set_defaults(run=run)
    return batch


def run(args, say):
    from ..errors import InputError
    from .api import run_batch

    for option in ("workers", "dask_local"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise InputError(f"--{option.replace('_', '-')} must be at least 1, got {value}")
    result = run_batch(
        args.manifest, args.output_dir, workers=args.workers, dask_local=args.dask_local, scheduler=args.scheduler,
        overwrite=args.overwrite, group_by_image=args.group_by_image, model=args.model, checkpoint=args.checkpoint,
        device=args.device, compile=args.compile, progress=not args.quiet, say=say,
    )
    for line in result.failed:
        say(f"row {line['row']} ({line['name']}): {line['reason']}")
    return result.exit_status
