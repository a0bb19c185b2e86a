"""The web app without a browser: VTK interactor events through the effect pipeline into the shared
controller (real LiteMedSAM), undo as one step, and the `web` command's safety checks."""

import asyncio
import os
import subprocess
import sys
import urllib.request
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from conftest import REPO_ROOT

from cli_support import call
from engine_support import shared_predictor
from web_support import AppThread, require_web, wslink_session

BRAIN = REPO_ROOT / "MedSAMSegment" / "MedSAMSegmentLib" / "data" / "pyradiomics-brain1"
IMAGE, LABEL = BRAIN / "brain1_image.nrrd", BRAIN / "brain1_label.nrrd"
BOX = (189, 95, 14, 208, 111, 14)  # the lesion's official box on its key slice
SIZE = 400


@pytest.fixture(scope="module")
def session():
    require_web()
    from trame.app import get_server

    from MedSAMSegmentLib.mrml_bridge.mrml_logic import MedSAMLogic
    from MedSAMSegmentLib.settings import MedSAMSettings
    from MedSAMSegmentLib.web.command import useOffscreenRendering
    from MedSAMSegmentLib.web.save import SaveTarget
    from MedSAMSegmentLib.web.session import WebSession

    useOffscreenRendering()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    predictor = shared_predictor()
    server = get_server("medsam-web-interaction-test", client_type="vue3")
    session = WebSession(server, str(IMAGE), SaveTarget(None, str(IMAGE)), MedSAMSettings(device="cpu"),
                         logicFactory=lambda settings: MedSAMLogic(settings, predictor=predictor))
    view = session.views["axial"]
    view.render_window().SetSize(SIZE, SIZE)
    view.interactor().UpdateSize(SIZE, SIZE)
    view.interactor().InvokeEvent("WindowResizeEvent")
    view.fit_view_to_content()
    session.setSliceIndex("axial", BOX[2])  # what the slider does (its state is bound once served)
    session.loop = loop
    yield session
    session.shutdown()
    session.close()
    loop.close()
    asyncio.set_event_loop(None)


def _xy(session, ijk):
    mapping = session.state["mapping_axial"]
    x, y, _z, _w = np.asarray(mapping["ijkToXy"]) @ [*ijk, 1.0]
    return int(round(x)), int(round(y))


def _drag(session, start, end, shift=False, release=True):
    """A left-button drag on the axial view's VTK interactor, as trame-rca replays the browser's."""
    interactor = session.views["axial"].interactor()
    (x0, y0), (x1, y1) = _xy(session, start), _xy(session, end)
    interactor.SetEventInformation(x0, y0, 0, int(shift))
    interactor.InvokeEvent("LeftButtonPressEvent")
    interactor.SetEventInformation((x0 + x1) // 2, (y0 + y1) // 2, 0, int(shift))
    interactor.InvokeEvent("MouseMoveEvent")
    interactor.SetEventInformation(x1, y1, 0, int(shift))
    interactor.InvokeEvent("MouseMoveEvent")
    if release:
        interactor.InvokeEvent("LeftButtonReleaseEvent")


def _run(session, action):
    async def go():
        session.run(action)
        if session.watcher is not None:
            await session.watcher

    session.loop.run_until_complete(go())


def _mask(session):
    from MedSAMSegmentLib.mrml_bridge import mrml_io

    return mrml_io.readSegmentMask(session.segmentationNode, session.segmentationEditor.active_segment_id,
                                   session.volumeNode)


def test_slider_is_in_slice_indices_and_probe_names_the_voxel(session):
    assert session.state["slice_axial"] == BOX[2]
    interactor = session.views["axial"].interactor()
    interactor.SetEventInformation(*_xy(session, BOX[:3]), 0, 0)
    interactor.InvokeEvent("MouseMoveEvent")
    assert session.state.probe.startswith(f"{BOX[0]} {BOX[1]} {BOX[2]} ")


def test_mouse_wheel_and_arrow_keys_change_the_slice(session):
    view = session.views["axial"]
    interactor = view.interactor()
    interactor.SetEventInformation(SIZE // 2, SIZE // 2, 0, 0)
    interactor.InvokeEvent("MouseWheelForwardEvent")
    assert session._sliceIndex(view)[2] == BOX[2] + 1
    interactor.SetKeySym("Up")
    interactor.InvokeEvent("KeyPressEvent")
    interactor.InvokeEvent("KeyReleaseEvent")
    assert session._sliceIndex(view)[2] == BOX[2] + 2
    assert session.state["slice_axial"] == BOX[2] + 2  # the slider follows
    session.setSliceIndex("axial", BOX[2])


def test_drag_sets_the_controllers_box_and_apply_is_one_undo_step(session):
    session.state.update({"mode": "slice", "apply_mode": "set", "preview_on_release": False})
    session.applyParameters()
    _drag(session, BOX[:3], BOX[3:])
    prompt = session.controller.prompt()
    assert (prompt.axis, prompt.box) == ("k", BOX)
    assert session.state.status.startswith(f"Box on slice {BOX[2]} along K")

    _run(session, "preview")
    assert session.controller.previewNode() is not None and session.lastOutcome.state == "previewed"
    assert not _mask(session).any()  # a preview does not touch the segment
    _run(session, "apply")  # the preview is up to date: applied without model work
    applied = _mask(session)
    assert applied[BOX[2]].sum() > 50 and applied.sum() == applied[BOX[2]].sum()
    assert session.state.can_undo

    _drag(session, BOX[:3], BOX[3:])
    _run(session, "apply")  # "set": remove + add in these slices, one undo step
    session.undo()
    assert np.array_equal(_mask(session), applied)
    session.undo()
    assert not _mask(session).any()
    session.redo()
    assert np.array_equal(_mask(session), applied)


def test_shift_drag_on_another_slice_adds_a_key_slice_box(session):
    session.controller.clearBoxes()
    _drag(session, BOX[:3], BOX[3:])
    other = BOX[2] + 2
    session.setSliceIndex("axial", other)
    _drag(session, (BOX[0], BOX[1], other), (BOX[3], BOX[4], other), shift=True)
    assert session.controller.prompt().box == BOX
    assert [(b.keySlice, b.box) for b in session.controller.addedBoxes()] == [
        (other, (BOX[0], BOX[1], other, BOX[3], BOX[4], other))]
    session.controller.clearBoxes()
    session.setSliceIndex("axial", BOX[2])


def test_a_key_box_added_while_a_preview_is_shown_updates_it(session):
    session.state.update({"mode": "propagate", "range": "around", "slices_around": 1, "apply_mode": "add",
                          "add_box": False})
    session.applyParameters()
    session.controller.clearBoxes()
    _drag(session, BOX[:3], BOX[3:])
    _run(session, "preview")
    first = session.lastOutcome
    other = BOX[2] + 1
    session.setSliceIndex("axial", other)
    _drag(session, (BOX[0], BOX[1], other), (BOX[3], BOX[4], other), shift=True)

    async def settle():  # the preview is scheduled after the mouse event, then watched
        for _ in range(3):
            await asyncio.sleep(0)
        if session.watcher is not None:
            await session.watcher

    session.loop.run_until_complete(settle())
    try:
        assert session.lastOutcome is not first and session.lastOutcome.state == "previewed"
        assert session.controller.pending[2] == session.controller.signature()  # the preview has the added box
    finally:
        session.controller.removePreview()
        session.controller.clearBoxes()
        session.setSliceIndex("axial", BOX[2])


def test_a_released_box_refills_the_preview_on_show_and_is_rendered_with_it(session, monkeypatch):
    """"This slice" previews on release. The next box's release starts its run without removing the
    preview on show (removing and creating a node renders every view, while the model runs), and no
    view renders until the result (within BOX_WITH_RESULT_S), which refills the same preview node:
    the box is drawn with it, in one frame."""
    from trame_slicer.rca_view.rca_view_factory import RcaRenderStrategy

    session.state.update({"mode": "slice", "preview_on_release": True})
    session.applyParameters()
    session.controller.clearBoxes()
    _drag(session, BOX[:3], BOX[3:])
    session.loop.run_until_complete(session.watcher)
    preview = session.controller.previewNode()
    assert preview is not None and session.lastOutcome.state == "previewed"

    _drag(session, (BOX[0] - 3, BOX[1] - 3, BOX[2]), (BOX[3] + 3, BOX[4] + 3, BOX[2]), release=False)
    rendered = []
    schedule = RcaRenderStrategy.schedule_render
    monkeypatch.setattr(RcaRenderStrategy, "schedule_render",
                        lambda self: rendered.append(self.abstract_view) or schedule(self))
    session.views["axial"].interactor().InvokeEvent("LeftButtonReleaseEvent")
    assert session.controller.busy and session.controller.previewNode() is preview
    assert not rendered, "no frame of the box alone while the model runs"
    try:
        session.loop.run_until_complete(session.watcher)
        assert session.lastOutcome.state == "previewed" and session.controller.previewNode() is preview
        assert session.controller.pending[2] == session.controller.signature()
    finally:
        session.controller.removePreview()
        session.state.preview_on_release = False


def test_a_result_renders_after_its_status_the_boxs_view_first(session, monkeypatch):
    """Each render holds the server's loop: the result's status line is sent first (the page shows
    the new frame with the status that explains it), then the box's view renders, then the others."""
    from trame_slicer.rca_view.rca_view_factory import RcaRenderStrategy

    from MedSAMSegmentLib.web import session as module
    from MedSAMSegmentLib.web.session import OTHER_VIEWS_AFTER_S

    monkeypatch.setattr(module, "BOX_WITH_RESULT_S", 60.0)  # the run's frames wait for its result, however slow
    session.state.update({"mode": "slice", "preview_on_release": False})
    session.applyParameters()
    _drag(session, BOX[:3], BOX[3:])
    session.loop.run_until_complete(asyncio.sleep(2 * OTHER_VIEWS_AFTER_S))  # earlier runs' views are done
    rendered = []
    schedule = RcaRenderStrategy.schedule_render
    monkeypatch.setattr(RcaRenderStrategy, "schedule_render",
                        lambda self: rendered.append((self.abstract_view, session.state.status)) or schedule(self))
    try:
        _run(session, "preview")
        assert session.lastOutcome.state == "previewed"
        assert [view for view, _status in rendered] == [session.views["axial"]]

        async def others():  # a render holds the loop: it may delay their turn on a busy machine
            for _ in range(100):
                await asyncio.sleep(OTHER_VIEWS_AFTER_S)
                if len(rendered) == len(session.views):
                    return

        session.loop.run_until_complete(others())
        assert {view for view, _status in rendered} == set(session.views.values())
        assert all(status.startswith("Preview:") for _view, status in rendered), rendered
    finally:
        session.controller.removePreview()


def test_the_progress_bar_shows_only_once_a_run_has_gone_on_for_a_while(session, monkeypatch):
    """A quick preview does not flash the progress bar (its animation costs the page what the result's
    frame needs); a longer run shows it until its end."""
    from MedSAMSegmentLib.web import session as module

    def shownDuringRun():
        async def go():
            shown = []
            session.run("preview")
            while not session.watcher.done():
                shown.append(session.state.show_progress)
                await asyncio.sleep(0.001)
            return shown

        return session.loop.run_until_complete(go())

    session.state.update({"mode": "slice", "preview_on_release": False})
    session.applyParameters()
    _drag(session, BOX[:3], BOX[3:])
    monkeypatch.setattr(module, "POLL_SECONDS", 0.001)
    try:
        monkeypatch.setattr(module, "PROGRESS_AFTER_S", 60.0)
        assert True not in shownDuringRun()
        monkeypatch.setattr(module, "PROGRESS_AFTER_S", 0.0)
        _drag(session, (BOX[0] - 2, BOX[1] - 2, BOX[2]), (BOX[3] + 2, BOX[4] + 2, BOX[2]))  # decoder work again
        assert True in shownDuringRun() and not session.state.show_progress
    finally:
        session.controller.removePreview()


def test_window_level_fields_set_the_display(session):
    display = session.volumeNode.GetScalarVolumeDisplayNode()
    session.state.update({"window": 321.0, "level": 123.0})
    session.applyWindowLevel()
    assert (display.GetWindow(), display.GetLevel()) == (321.0, 123.0)


def test_press_during_a_run_is_answered_and_draws_nothing(session):
    from MedSAMSegmentLib.effect.job import Job

    before = session.controller.parameter("Box")
    session.controller.job = Job(lambda progress, cancelled: None)  # a run in progress (not started)
    try:
        _drag(session, (100, 100, BOX[2]), (120, 120, BOX[2]))
        assert session.state.error.startswith("MedSAM is running")
        assert session.controller.parameter("Box") == before
    finally:
        session.controller.job = None


def test_segmentation_file_is_loaded_on_the_images_grid(tmp_path):
    require_web()
    from trame.app import get_server

    from MedSAMSegmentLib.fileio import imageio
    from MedSAMSegmentLib.mrml_bridge import mrml_io
    from MedSAMSegmentLib.settings import MedSAMSettings
    from MedSAMSegmentLib.web.save import SaveTarget
    from MedSAMSegmentLib.web.session import WebSession

    image = imageio.read_image(IMAGE)
    label = (imageio.read_image(LABEL).array > 0).astype(np.uint8)
    start = tmp_path / "start.seg.nrrd"
    imageio.write_seg_nrrd(start, label, image, "Lesion", (0.9, 0.2, 0.2))
    web = WebSession(get_server("medsam-web-segmentation-test", client_type="vue3"), str(IMAGE),
                     SaveTarget(None, str(IMAGE)), MedSAMSettings(device="cpu"), segmentationPath=str(start))
    try:
        assert [s["name"] for s in web.state.segments] == ["Lesion"]
        segmentId = web.segmentationEditor.active_segment_id
        assert np.array_equal(mrml_io.readSegmentMask(web.segmentationNode, segmentId, web.volumeNode), label)
    finally:
        web.close()


def test_web_refuses_a_remote_host_without_allow_remote(capsys):
    code, _out, err = call(capsys, "web", str(IMAGE), "--host", "0.0.0.0")
    assert code == 2 and "--allow-remote" in err


@pytest.mark.parametrize("spelling", ["same", "symlink", "hardlink", "dotted"])
def test_web_refuses_to_save_over_the_image(tmp_path, capsys, spelling):
    image = tmp_path / "image.seg.nrrd"  # an image that even has the output's extension
    image.write_bytes(IMAGE.read_bytes())
    output = {"same": image, "symlink": tmp_path / "link.seg.nrrd", "hardlink": tmp_path / "hard.seg.nrrd",
              "dotted": tmp_path / "." / "image.seg.nrrd"}[spelling]
    if spelling == "symlink":
        output.symlink_to(image)
    elif spelling == "hardlink":
        os.link(image, output)
    code, _out, err = call(capsys, "web", str(image), "--output", str(output), "--overwrite")
    assert code != 0 and "is the input" in err


def test_web_replaces_an_existing_file_or_the_segmentation_only_with_overwrite(tmp_path):
    from MedSAMSegmentLib.errors import OutputError
    from MedSAMSegmentLib.web.save import SaveTarget

    existing = tmp_path / "seg.seg.nrrd"
    existing.write_bytes(b"x")
    with pytest.raises(OutputError, match="--overwrite"):
        SaveTarget(str(existing), str(IMAGE), segmentation=str(existing)).check()
    with pytest.raises(OutputError, match="exists"):
        SaveTarget(str(existing), str(IMAGE)).check()
    assert SaveTarget(str(existing), str(IMAGE), segmentation=str(existing), overwrite=True).check()
    with pytest.raises(OutputError, match="--output"):
        SaveTarget(None, str(IMAGE)).check()
    with pytest.raises(OutputError, match=".seg.nrrd"):
        SaveTarget(str(tmp_path / "out.nii.gz"), str(IMAGE)).check()


def test_web_saves_again_over_its_own_file_but_not_over_a_stranger(tmp_path, slicer_core):
    """Save, edit, Save again works without --overwrite (the file is the one the app saved); a file
    put in its place by someone else meanwhile is not replaced."""
    from MedSAMSegmentLib.errors import OutputError
    from MedSAMSegmentLib.web.save import SaveTarget

    output = tmp_path / "out.seg.nrrd"
    target = SaveTarget(str(output), str(IMAGE))
    segmentation = slicer_core.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.GetSegmentation().AddEmptySegment("", "a")
    target.write(segmentation)
    target.write(segmentation)  # the second Save of the same session
    assert output.exists()
    output.unlink()
    output.write_bytes(b"someone else's file")
    with pytest.raises(OutputError, match="exists"):
        target.write(segmentation)
    assert output.read_bytes() == b"someone else's file"


def test_web_prints_its_url_once_listening(tmp_path):
    require_web()
    script = ("import sys; from MedSAMSegmentLib.cli import main; sys.exit(main(sys.argv[1:]))")
    process = subprocess.Popen([sys.executable, "-c", script, "web", str(IMAGE), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path)
    try:
        line = process.stdout.readline()
        assert line.startswith("MedSAM web app: http://127.0.0.1:"), line
        url = line.split(": ", 1)[1].strip()
        key = parse_qs(urlsplit(url).query)["secret"][0]  # this start's own key, in the URL
        assert len(key) >= 40 and key != "wslink-secret"
        with urllib.request.urlopen(url, timeout=30) as response:  # listening as soon as printed
            assert response.status == 200
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.parametrize("origin, host, allowed", [
    ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
    ("http://localhost:8080", "localhost:8080", True),  # the same machine by another loopback name
    ("http://[::1]:8080", "[::1]:8080", True),
    ("https://127.0.0.1:8080", "127.0.0.1:8080", True),
    ("http://evil.example:8080", "127.0.0.1:8080", False),  # another site's page
    ("http://127.0.0.1:9999", "127.0.0.1:8080", False),  # another app on this machine
    ("http://evil.example:8080", "evil.example:8080", False),  # DNS rebinding: a site's name for 127.0.0.1
    ("null", "127.0.0.1:8080", False),  # a sandboxed frame or a file:// page
    (None, "127.0.0.1:8080", False),
    ("http://127.0.0.1:8080", "127.0.0.1", False),
])
def test_origin_check_accepts_only_the_apps_own_page(origin, host, allowed):
    from MedSAMSegmentLib.web.access import originAllowed

    assert originAllowed(origin, host, "127.0.0.1", 8080) is allowed


def test_origin_check_of_a_remote_bind():
    from MedSAMSegmentLib.web.access import originAllowed

    assert originAllowed("http://10.1.2.3:8080", "10.1.2.3:8080", "10.1.2.3", 8080)
    assert not originAllowed("http://localhost:8080", "localhost:8080", "10.1.2.3", 8080)
    assert originAllowed("http://gpu-box.lab:8080", "gpu-box.lab:8080", "0.0.0.0", 8080)  # any name: the key guards
    assert not originAllowed("http://evil.example:8080", "gpu-box.lab:8080", "0.0.0.0", 8080)


def test_only_a_client_with_the_urls_key_on_the_apps_own_page_can_connect():
    """Real WebSocket connections to a running app: trame's default key and a missing key get no
    answer but an authentication error; another site's page, or none, is refused at the handshake."""
    require_web()
    app = AppThread(str(IMAGE)).start()
    try:
        parts = urlsplit(app.url)
        key = parse_qs(parts.query)["secret"][0]
        own = f"http://{parts.netloc}"

        granted = wslink_session(app.url, own, key)
        assert "result" in granted["hello"] and "result" in granted["call"], granted
        assert granted["call"]["result"]["state"]["status"].startswith("Draw a box")  # the app's own state

        for secret in ("wslink-secret", None, key[:-1]):
            refused = wslink_session(app.url, own, secret)
            assert refused["hello"]["error"]["message"] == "Authentication failed", (secret, refused)
            assert refused["call"]["error"]["message"].startswith("Unauthorized"), (secret, refused)
            assert "result" not in refused["call"]

        port = urlsplit(app.url).port
        for origin, host in (("http://evil.example", None), (f"http://localhost:{port + 1}", None), (None, None),
                             (f"http://evil.example:{port}", f"evil.example:{port}")):
            assert wslink_session(app.url, origin, key, host=host) == {"refused": 403}, (origin, host)
    finally:
        app.stop()


def test_every_loopback_address_is_local_and_nothing_else_is():
    from MedSAMSegmentLib.web.access import isLoopback

    for host in ("127.0.0.1", "127.0.0.2", "localhost", "LOCALHOST", "::1", "[::1]"):
        assert isLoopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org", "localhost.example.org", ""):
        assert not isLoopback(host), host
