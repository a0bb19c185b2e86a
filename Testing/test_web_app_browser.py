"""End to end in headless Chromium (Playwright): the web app on the bundled brain MR.

One test, one app: drag the official box of the lesion on the axial view (at the screen position
the view's voxel-to-screen mapping gives), Preview -> Apply -> Save, compare with the command line;
Undo -> Save; a second tab shares the session and its drag during a running propagation is answered;
Cancel leaves the segment unchanged. The app runs in a thread of this process with the suite's shared
LiteMedSAM (web_support.AppThread). Set MEDSAM_UPDATE_SCREENSHOT=1 to refresh docs/web-app.png.
"""

import os
import shutil
import time

import numpy as np
import pytest

from conftest import REPO_ROOT

from engine_support import dice, shared_predictor
from web_support import AppThread, chromium, require_web, skip_or_fail

BRAIN = REPO_ROOT / "MedSAMSegment" / "MedSAMSegmentLib" / "data" / "pyradiomics-brain1"
IMAGE, LABEL = BRAIN / "brain1_image.nrrd", BRAIN / "brain1_label.nrrd"
AROUND = 3  # the official box spans slices 11-17: key slice 14, three each side
RUN_TIMEOUT_MS = 100_000


def _read(path):
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)


def _same_grid(a, b):
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing())
            and np.allclose(a.GetOrigin(), b.GetOrigin()) and np.allclose(a.GetDirection(), b.GetDirection()))


def _cli_mask(tmp_path, box, monkeypatch):
    """The command line's result for the box, with the suite's model (same weights, same cache)."""
    from MedSAMSegmentLib import cli
    from MedSAMSegmentLib.engine import predictor

    monkeypatch.setattr(predictor, "Predictor", lambda *a, **k: shared_predictor())
    out = tmp_path / "cli.seg.nrrd"
    assert cli.main(["segment", str(IMAGE), "--box-ijk", *map(str, box), "-o", str(out), "--device", "cpu",
                     "-q"]) == 0
    return _read(out)[1] > 0


@pytest.fixture
def browser():
    require_web()
    path, why = chromium()
    if path is None:
        skip_or_fail(why)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (pip install -e .[web,test])")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield browser
        browser.close()


class Page:
    """A tab of the app: state through trame's client, clicks and drags like a user."""

    def __init__(self, browser, url):
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.page.goto(url)
        self.page.wait_for_selector('[data-testid="view-axial"] img', timeout=60_000)

    def set(self, name, value):
        self.page.evaluate("([n, v]) => window.trame.state.set(n, v)", [name, value])

    def get(self, name):
        return self.page.evaluate("(n) => window.trame.state.get(n)", name)

    def text(self, testid):
        return self.page.inner_text(f'[data-testid="{testid}"]')

    def click(self, testid):
        self.page.click(f'[data-testid="{testid}"]')

    def wait_text(self, testid, start, timeout=RUN_TIMEOUT_MS):
        self.page.wait_for_function("([id, s]) => { const e = document.querySelector(`[data-testid=\"${id}\"]`);"
                                    " return e && e.innerText.startsWith(s); }", arg=[testid, start], timeout=timeout)

    def wait_busy(self, busy, timeout=RUN_TIMEOUT_MS):
        value = "true" if busy else "false"
        self.page.wait_for_selector(f'[data-testid="status"][data-busy="{value}"]', timeout=timeout)

    def screen(self, ijk):
        """Page coordinates of voxel ijk in the axial view, from the view's own mapping."""
        mapping = self.get("mapping_axial")
        x, y, _z, _w = np.asarray(mapping["ijkToXy"]) @ [*ijk, 1.0]
        element = self.page.locator('[data-testid="view-axial"] img').bounding_box()
        scale_x, scale_y = element["width"] / mapping["width"], element["height"] / mapping["height"]
        return element["x"] + x * scale_x, element["y"] + (mapping["height"] - y) * scale_y

    def drag(self, start, end):
        mouse = self.page.mouse
        mouse.move(*self.screen(start))
        mouse.down()
        middle = [(a + b) / 2 for a, b in zip(start, end)]
        mouse.move(*self.screen(middle), steps=4)
        mouse.move(*self.screen(end), steps=4)
        mouse.up()


def test_box_preview_apply_save_undo_cancel_in_chromium(browser, tmp_path, monkeypatch):
    from MedSAMSegmentLib.demo import official_box

    image, label = _read(IMAGE)
    box = official_box(_read(LABEL)[1] > 0)
    i0, j0, k0, i1, j1, k1 = box
    key = int((k1 - k0) / 2 + k0)
    output = tmp_path / "out.seg.nrrd"
    app = AppThread(str(IMAGE), output=str(output), overwrite=True, predictor=shared_predictor()).start()
    try:
        tab = Page(browser, app.url)
        tab.set("slice_axial", key)
        tab.set("mode", "propagate")
        tab.set("range", "around")
        tab.set("slices_around", AROUND)
        tab.page.wait_for_function(f"window.trame.state.get('slice_axial') === {key}")
        # The mapping is the view's: the data probe under the computed position names that voxel.
        tab.page.mouse.move(*tab.screen((i0, j0, key)))
        tab.wait_text("probe", f"{i0} {j0} {key} ", timeout=10_000)

        tab.drag((i0, j0, key), (i1, j1, key))
        tab.wait_text("status", f"Box on slice {key} along K", timeout=10_000)
        tab.click("preview")
        tab.wait_busy(True, timeout=10_000)
        tab.wait_busy(False)
        tab.wait_text("status", "Preview:")
        tab.page.wait_for_timeout(1500)  # the views' frames with the preview follow the status line
        shot = tmp_path / "web-app.png"
        tab.page.screenshot(path=str(shot))
        if os.environ.get("MEDSAM_UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(shot, REPO_ROOT / "docs" / "web-app.png")
        tab.click("apply")
        tab.wait_text("status", "Applied", timeout=30_000)
        tab.click("save")
        tab.wait_text("saved", "Saved", timeout=30_000)
        saved, array = _read(output)
        assert _same_grid(saved, image)
        web = array > 0
        cli = _cli_mask(tmp_path, (i0, j0, k0, i1, j1, k1), monkeypatch)
        web_dice, cli_dice = dice(web, label > 0), dice(cli, label > 0)
        assert abs(web_dice - cli_dice) <= 0.02, (web_dice, cli_dice)
        applied = array.copy()

        tab.click("undo")
        tab.page.wait_for_function("window.trame.state.get('can_redo') === true")
        tab.set("saved", "")
        tab.click("save")
        tab.wait_text("saved", "Saved", timeout=30_000)
        assert not (_read(output)[1] > 0).any()
        tab.click("redo")
        tab.page.wait_for_function("window.trame.state.get('can_undo') === true")

        # A long propagation; a second tab shares the session and sees it run.
        tab.set("range", "volume")
        tab.page.wait_for_function("window.trame.state.get('range') === 'volume'")
        tab.click("preview")
        tab.wait_busy(True, timeout=10_000)
        other = Page(browser, app.url)
        other.wait_busy(True, timeout=10_000)
        other.drag((i0 - 5, j0 - 5, key), (i1 + 5, j1 + 5, key))
        other.wait_text("error", "MedSAM is running", timeout=10_000)
        tab.wait_text("error", "MedSAM is running", timeout=10_000)  # the same page state in both tabs
        started = time.perf_counter()
        tab.click("cancel")
        tab.wait_busy(False, timeout=30_000)
        assert time.perf_counter() - started < 30
        tab.wait_text("status", "Cancelled")
        tab.set("saved", "")
        tab.click("save")
        tab.wait_text("saved", "Saved", timeout=30_000)
        assert np.array_equal(_read(output)[1], applied)
    finally:
        app.stop()
