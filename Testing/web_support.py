"""The web app in a thread of the test process, with the shared real LiteMedSAM injected.

The app's asyncio loop, its VTK views and its MRML scene live in that thread, as they do in the
`medsam-segment web` process; the test talks to it through the browser (or calls into the session
on its loop with `call`). Sharing the process lets the app use engine_support's predictor, whose
model and embedding cache the other tests have already filled.
"""

import asyncio
import concurrent.futures
import itertools
import threading

_names = itertools.count()


class AppThread:
    def __init__(self, image, output=None, segmentation=None, overwrite=False, predictor=None):
        self.image, self.output, self.segmentation, self.overwrite = image, output, segmentation, overwrite
        self.predictor = predictor
        self.url = None
        self.session = None
        self.server = None
        self.loop = None
        self.error = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="medsam-web-test", daemon=True)

    def _logicFactory(self):
        from MedSAMSegmentLib.mrml_bridge.mrml_logic import MedSAMLogic

        predictor = self.predictor
        return None if predictor is None else (lambda settings: MedSAMLogic(settings, predictor=predictor))

    def _main(self):
        from MedSAMSegmentLib.settings import MedSAMSettings
        from MedSAMSegmentLib.web.command import createApp, serve
        from MedSAMSegmentLib.web.save import SaveTarget

        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            target = SaveTarget(self.output, self.image, self.segmentation, self.overwrite)
            self.server, self.session = createApp(self.image, target, MedSAMSettings(device="cpu"),
                                                  segmentationPath=self.segmentation,
                                                  logicFactory=self._logicFactory(),
                                                  name=f"medsam-web-test-{next(_names)}")

            def ready(url):
                self.url = url
                self._ready.set()

            serve(self.server, "127.0.0.1", 0, ready, thread=True)
        except BaseException as exc:  # handed to start()
            self.error = exc
        finally:
            self._ready.set()
            if self.session is not None:
                self.session.close()

    def start(self, timeout=120):
        self.thread.start()
        if not self._ready.wait(timeout) or self.url is None:
            raise RuntimeError(f"the web app did not start: {self.error!r}")
        return self

    def call(self, function, timeout=60):
        """Run function() on the app's loop and return its result."""
        future = concurrent.futures.Future()

        def run():
            try:
                future.set_result(function())
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def stop(self):
        if self.server is not None and self.loop is not None and self.loop.is_running():
            if self.session is not None:
                self.call(self.session.shutdown)
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.thread.join(30)


def chromium():
    """(path of the operating system's Chromium, "") or (None, why not). Installs the Debian package
    when it is missing and this process may (root, apt-get): Playwright's own browser download is
    not reachable from every machine that runs the suite."""
    import os
    import shutil
    import subprocess

    names = ("chromium", "chromium-browser", "google-chrome")
    found = next((shutil.which(n) for n in names if shutil.which(n)), None)
    if found:
        return found, ""
    if not shutil.which("apt-get") or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None, "no Chromium on PATH and no way to install it here (needs root and apt-get)"
    try:
        subprocess.run(["apt-get", "update"], check=True, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, capture_output=True, timeout=900,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"installing Chromium with apt-get failed: {exc}"
    found = next((shutil.which(n) for n in names if shutil.which(n)), None)
    return (found, "") if found else (None, "apt-get installed no chromium executable")


def skip_or_fail(reason):
    """Skip with the reason; under CI=true (.ci/run) a skipped browser test is a failure."""
    import os

    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"browser test cannot run under CI: {reason}")
    pytest.skip(reason)


def require_web():
    """Skip (fail under CI=true) unless the web extra imports: trame-slicer with its slicer-core."""
    try:
        import trame_slicer.core  # noqa: F401  (needs slicer-layer-dm and the slicer-core it was built for)
    except ImportError as exc:
        skip_or_fail(f"the web extra does not import ({exc}): pip install -e .[web,test]")


def wslink_session(url, origin, secret=None, host=None, call="trame.state.get"):
    """Talk to the app's WebSocket as trame's page does, over a real connection: the handshake with
    this Origin (None: no Origin header; host: a Host header of its own), wslink's hello with
    `secret`, then one call. Returns {"refused": HTTP status} when the handshake is refused, else
    {"hello": reply, "call": reply} (each a wslink message: "result" or "error")."""
    import asyncio
    from urllib.parse import urlsplit

    import aiohttp
    import msgpack
    from wslink.chunking import UnChunker, generate_chunks

    parts = urlsplit(url)
    ws_url = f"ws://{parts.netloc}/ws"
    headers = {} if origin is None else {"Origin": origin}
    if host is not None:
        headers["Host"] = host

    async def talk():
        unchunker = UnChunker()
        unchunker.set_max_message_size(1 << 26)  # our side: the server's replies may be large
        async with aiohttp.ClientSession() as http:
            try:
                ws = await http.ws_connect(ws_url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=10))
            except aiohttp.WSServerHandshakeError as exc:
                return {"refused": exc.status}
            async with ws:
                async def rpc(rpc_id, method, args):
                    message = msgpack.packb({"wslink": "1.0", "id": rpc_id, "method": method, "args": args,
                                             "kwargs": {}})
                    for chunk in generate_chunks(message, 0):
                        await ws.send_bytes(chunk)
                    while True:
                        received = await asyncio.wait_for(ws.receive(), 30)
                        if received.type != aiohttp.WSMsgType.BINARY:
                            raise RuntimeError(f"the WebSocket ended: {received.type}")
                        reply = unchunker.process_chunk(received.data)
                        if reply is not None and reply.get("id") == rpc_id:
                            return reply

                hello = await rpc("system:c0:0", "wslink.hello", [{"secret": secret}] if secret is not None else [{}])
                result = await rpc("rpc:c0:1", call, [])
                return {"hello": hello, "call": result}

    return asyncio.run(talk())
