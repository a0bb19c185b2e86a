"""The `medsam-segment web` sub-command: check the arguments, build the app, serve it.

Safe by default: the server binds 127.0.0.1; a --host that is not a loopback address needs --allow-remote and prints a
warning (plain HTTP: the key travels unencrypted). Only a client with the URL's key, from the app's
own page, can connect (access.py). It reads only IMAGE and --segmentation and writes only --output;
a bad --output is refused before the server starts. The URL is printed once the server listens.
"""

import os
import sys

from .access import isLoopback

REMOTE_WARNING = ("WARNING: serving on {host} over plain HTTP: the key in the URL is the only protection and "
                  "travels unencrypted; anyone who has the URL can read the image and write {output}")


def add_parser(commands, add_common):
    from ..model.registry import DEFAULT_MODEL, known_models

    web = commands.add_parser(
        "web",
        help="segment in the browser (trame-slicer web app; needs pip install medsam-segment[web])",
        description="Serve a web app with axial, coronal and sagittal views and the MedSAM box tool of the "
        "Slicer effect: drag a box, Preview, Apply, Undo, Save to --output.",
    )
    web.add_argument("image", help="input image (.nii, .nii.gz, .nrrd, .mha, ...)")
    web.add_argument("--segmentation", metavar="SEG.seg.nrrd", help="start from this segmentation (read only)")
    web.add_argument("--output", "-o", metavar="OUT.seg.nrrd", help="where Save writes (nothing else is written)")
    web.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    web.add_argument("--port", type=int, default=0, help="port (default: 0, any free port)")
    web.add_argument("--allow-remote", action="store_true", help="allow a --host other than this machine")
    web.add_argument("--model", choices=known_models(), default=DEFAULT_MODEL, help="default: %(default)s")
    web.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="default: %(default)s")
    add_common(web)
    web.set_defaults(run=run)
    return web


def checkArguments(args):
    """UsageError / InputError / OutputError before anything starts; returns the SaveTarget."""
    from ..cli import UsageError
    from ..fileio import imageio
    from .save import SaveTarget

    if not isLoopback(args.host) and not args.allow_remote:
        raise UsageError(f"--host {args.host} serves the app to other machines over plain HTTP (the URL's key "
                         "travels unencrypted): add --allow-remote to do so")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0-65535, got {args.port}")
    imageio.check_readable(args.image)
    if args.segmentation:
        imageio.check_readable(args.segmentation, "segmentation file")
    target = SaveTarget(args.output, args.image, args.segmentation, args.overwrite)
    if args.output:
        target.check()
    return target


def useOffscreenRendering():
    """Without a display, VTK renders through EGL (Mesa's software driver where there is no GPU)."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


def createApp(imagePath, saveTarget, settings, segmentationPath=None, logicFactory=None, name="medsam-web"):
    """(server, session): the trame server with the page built, not yet started."""
    useOffscreenRendering()
    try:
        from trame.app import get_server
        from trame_slicer import module as trameSlicerModule
    except ImportError as exc:
        from ..errors import DependencyError

        raise DependencyError(f"the web app needs its extra: pip install 'medsam-segment[web]' ({exc})") from None
    from .layout import buildLayout
    from .session import WebSession

    server = get_server(name, client_type="vue3")
    server.enable_module(trameSlicerModule)
    session = WebSession(server, imagePath, saveTarget, settings, segmentationPath=segmentationPath,
                         logicFactory=logicFactory)
    buildLayout(server, session)
    return server, session


def serve(server, host, port, onReady, thread=False):
    """Start the server (blocking); onReady(url) once it listens, the URL carrying this start's key.
    thread: it runs in a thread of its own (no signal handlers; tests and benchmarks)."""
    from . import access

    key = access.newKey()
    access.protect(server, key, host)
    shown = f"[{host}]" if ":" in host else host
    server.controller.on_server_ready.add(lambda **_: onReady(access.urlWithKey(f"http://{shown}:{server.port}/", key)))
    argv = sys.argv
    sys.argv = argv[:1]  # trame parses sys.argv for its own options: ours are not for it
    try:
        server.start(host=host, port=port, open_browser=False, show_connection_info=False, timeout=0,
                     disable_logging=True, thread=thread)
    finally:
        sys.argv = argv


def run(args, say):
    from ..settings import MedSAMSettings

    target = checkArguments(args)
    if not isLoopback(args.host):
        print(REMOTE_WARNING.format(host=args.host, output=target.output or "nothing"), file=sys.stderr, flush=True)
    settings = MedSAMSettings(model=args.model, device=args.device)
    server, session = createApp(args.image, target, settings, segmentationPath=args.segmentation)
    def ready(url):
        print(f"MedSAM web app: {url}", flush=True)

    try:
        serve(server, args.host, args.port, ready)
    finally:
        session.shutdown()
        session.close()
    return 0
