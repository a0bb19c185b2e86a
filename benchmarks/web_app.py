"""The web app's response times in headless Chromium, on the bundled brain MR; prints a Markdown table.

Measured on a real `medsam-segment web` process (its own model, cold caches):
  - app start -> first frame: from launching the process to the first axial image in the page
    (and to the URL line, i.e. the server listening); Chromium is already running, as a user's
    browser is, and opens the URL as soon as it is printed;
  - box release -> key-slice preview visible: "this slice" mode with preview on release (the default);
    the time from the mouse button's release to the first axial frame received by the page whose
    pixels show the preview (the segment's colour over the middle of the box), on a slice the app has
    not encoded yet, then with a box on the next slice, which the app has encoded in the background
    meanwhile (the first box's preview still in the scene, as when a user moves on to the next slice).
    The model is loaded first by a warm-up box on another slice (not counted). The slice is shown and
    the box drawn at once, so background pre-encoding of the shown slice may already have started;
  - server RSS: the process's resident and peak resident memory at the end (VmRSS, VmHWM).

    python benchmarks/web_app.py [--repeats 3] [--output benchmarks/results/web_app.md] [--autogroup-nice -20]

Linux schedules sessions (autogroups) fairly against each other, whatever the nice values inside
them: a `nice -n 19` job started in its own session takes a full session's share from this benchmark.
--autogroup-nice N gives the benchmark's sessions (its own, with the server, and the browser's) the
scheduler weight of nice N (-20: such jobs then take about 1 % each, as nice 19 means).
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BRAIN = ROOT / "MedSAMSegment" / "MedSAMSegmentLib" / "data" / "pyradiomics-brain1"
IMAGE = BRAIN / "brain1_image.nrrd"
BOX = (189, 95, 14, 208, 111, 14)
NEXT_BOX = (163, 87, 15, 207, 117, 15)  # the lesion's box on the next slice
WARM_SLICE = 6
# Earlier runs' medians (3 starts each), kept as columns of the results; "" where not recorded.
HISTORY = (
    # Before the speed-ups of issue 13 (commit fa2a24f), the machine quiet; the browser was launched
    # after the URL line, adding its own start-up to the first frame; a preview was "visible" with the
    # first frame after its status line.
    ("2026-11-30 05:43", {"listening": "3.95 s", "first_frame": "6.94 s", "first_frame_cpu": "5.70 s",
                          "cold": "1.87 s", "cold_cpu": "2.30 s", "warm": "849 ms", "warm_cpu": "1040 ms",
                          "VmRSS": "1.22 GiB", "VmHWM": ""}),
    # After them (commit c76642a); a preview was still "visible" with the first frame after its status
    # line, and the encoded-slice box was drawn with the first box's preview on show.
    ("2026-11-30 07:47", {"listening": "4.17 s", "first_frame": "5.69 s", "first_frame_cpu": "5.11 s",
                          "cold": "1.35 s", "cold_cpu": "1.58 s", "warm": "396 ms", "warm_cpu": "300 ms",
                          "VmRSS": "1.18 GiB", "VmHWM": "1.24 GiB"}),
)

# A frame shows the preview when at least this share of the pixels in the middle of the box have the
# preview's colour, the segment's (1.0, 0.85, 0.0) over the grey MR: red and green well above blue.
# Measured: 1.0 with the preview; at most 0.2 with the box being drawn (the same yellow, a thin outline).
PREVIEW_SHARE = 0.5
OBSERVE = """(middle) => {
  // Each new axial frame from window.__from on: [time it was put in the page, the share of the pixels
  // in `middle` (the box's middle, as fractions of the frame) that have the preview's colour; null
  // until counted]. The frames of the drag are not examined: the page has enough to do then.
  window.__frames = [];
  window.__from = Infinity;
  window.__status = [];
  window.__middle = middle;
  if (window.__observing) return;  // one observer of each: a frame is one entry
  window.__observing = true;
  const img = document.querySelector('[data-testid="view-axial"] img');
  const canvas = document.createElement('canvas');
  const context = canvas.getContext('2d', {willReadFrequently: true});
  new MutationObserver(() => {
    const frame = [performance.now(), null];
    if (frame[0] < window.__from) return;
    window.__frames.push(frame);
    const src = img.src;
    img.decode().then(() => {  // the decoding the page needs to show it (no second one)
      if (img.src !== src) { frame[1] = -1; return; }  // already replaced: not counted
      const [w, h] = [img.naturalWidth, img.naturalHeight];
      const [x0, y0, x1, y1] = window.__middle.map((f, n) => Math.round(f * (n % 2 ? h : w)));
      canvas.width = x1 - x0;
      canvas.height = y1 - y0;
      context.drawImage(img, x0, y0, x1 - x0, y1 - y0, 0, 0, x1 - x0, y1 - y0);
      const rgba = context.getImageData(0, 0, x1 - x0, y1 - y0).data;
      let count = 0;
      for (let i = 0; i < rgba.length; i += 4)
        if (rgba[i] - rgba[i + 2] > 25 && rgba[i + 1] - rgba[i + 2] > 15) count++;
      frame[1] = count / (rgba.length / 4);
    }, () => { frame[1] = -1; });
  }).observe(img, {attributes: true, attributeFilter: ['src']});
  const status = document.querySelector('[data-testid="status"]');
  new MutationObserver(() => window.__status.push([performance.now(), status.innerText]))
    .observe(status, {childList: true, subtree: true, characterData: true});
}"""


NOTES = """
Server CPU time is the server process's own (all its threads): it depends on other processes far less
than the wall times do. "Server CPU time meanwhile" includes everything the server does in that span:
the box's run, renders and JPEG frames, and background pre-encoding.

How a preview counts as visible changed after the 07:47 run: the page now examines each axial frame
it receives after the release and takes the first in which at least half of the pixels in the
middle of the box have the preview's colour. The earlier runs took the first frame after the status
line "Preview: ...": the status then went out after the result's frames, and a frame already on its
way (the box alone) could count. The encoded-slice box is now drawn on the next slice, once the app
has encoded it in the background (the server idle), with the first box's preview still in the scene;
the earlier runs drew a second box on the same slice with the first one's preview on show.

What made the difference from the first column (issue 13), by 07:47:
- slice views without multisampling: trame-slicer asks for 8 samples, which on Mesa's software
  renderer made each 711 x 866 frame cost 65-100 ms instead of 13-29 ms;
- one render per frame: trame-rca rendered every change twice (a "still" frame at a higher JPEG
  quality 5 frame periods later), and that second render held the event loop, delaying the first
  frame's delivery too;
- a box's run no longer waits for a background encoder step of a neighbouring slice, whose low
  priority stretched it to several times its length: the neighbours are held from the press to 1 s
  after the release or the run, and a run pauses the pre-encoder; the slice in view goes on;
- the first pre-encoding, which loads torch and the model, starts once the views have stayed on
  their slices for 0.3 s (or at a press): the first frames are rendered before it.
The browser is started before the app (a user's browser is already open); in the first run it was
launched after the URL line, which added its own start-up to the first frame.
Then, for the preview of an encoded slice:
- runs and background pre-encoding share one intensity window per volume and rule (its statistics
  read the whole volume; the pre-encoder's memo never matched, and each run computed it again);
- the release starts the run without removing the preview on show (which rendered every view while
  the model ran); the result refills the same preview node, cut to its voxels (0.2 ms instead of 12);
- the box's view holds its frames until the result, at most 0.1 s: the box is drawn with the preview
  in one frame, instead of a frame of the box alone competing with the decoder for the 2 cores;
- the result's status line is sent before its frames (it went after every view's render), the view
  of the box renders first, the two others 30 ms after it;
- the mask's bounds by reductions instead of np.argwhere (10-20 ms); the worker wakes the server's
  loop when the job ends (no thread waiting on it).
"""


def memory(pid):
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS", "VmHWM")):
                name, value = line.split(":")
                values[name] = int(value.split()[0]) / 1024 / 1024
    return values


def cpu_seconds(pid):
    """User + system CPU time of a process so far: what the work costs, whatever else runs."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def screen(page, ijk):
    mapping = page.evaluate("window.trame.state.get('mapping_axial')")
    x, y, _z, _w = np.asarray(mapping["ijkToXy"]) @ [*ijk, 1.0]
    element = page.locator('[data-testid="view-axial"] img').bounding_box()
    return (element["x"] + x * element["width"] / mapping["width"],
            element["y"] + (mapping["height"] - y) * element["height"] / mapping["height"])


def middle(page, start, end):
    """The middle half of the box from voxel `start` to `end` on the axial frame, as fractions of
    its width and height (x0, y0, x1, y1), top row first: clear of the box's outline."""
    mapping = page.evaluate("window.trame.state.get('mapping_axial')")
    corners = np.array([np.asarray(mapping["ijkToXy"]) @ [*ijk, 1.0] for ijk in (start, end)])[:, :2]
    (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
    x0, x1 = x0 + (x1 - x0) / 4, x1 - (x1 - x0) / 4
    y0, y1 = y0 + (y1 - y0) / 4, y1 - (y1 - y0) / 4
    return [x0 / mapping["width"], 1 - y1 / mapping["height"], x1 / mapping["width"], 1 - y0 / mapping["height"]]


def wait_idle(pid, timeout=60.0):
    """Until the server has used (almost) no CPU for half a second: its background encoding is done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - before < 0.03:
            return
    raise RuntimeError("the server did not go idle")


def show_slice(page, index):
    page.evaluate(f"window.trame.state.set('slice_axial', {index})")
    page.wait_for_function(f"window.trame.state.get('slice_axial') === {index}")


def release_to_preview(page, start, end, pid):
    """(seconds from the button's release to the first frame showing the preview in the box,
    server CPU seconds meanwhile)."""
    page.evaluate(OBSERVE, middle(page, start, end))
    mouse = page.mouse
    mouse.move(*screen(page, start))
    mouse.down()
    mouse.move(*screen(page, end), steps=4)
    released = page.evaluate("window.__from = performance.now()")
    cpu = cpu_seconds(pid)
    mouse.up()
    try:
        page.wait_for_function("window.__status.some(s => s[1].startsWith('Preview:'))", timeout=600_000)
    except Exception:
        raise RuntimeError(f"no preview; the page says: {page.inner_text('[data-testid=status]')!r}") from None
    shows = f"window.__frames.find(f => f[0] >= {released} && f[1] >= {PREVIEW_SHARE})"
    page.wait_for_function(f"!!{shows}", timeout=10_000)
    shown = page.evaluate(f"{shows}[0]")
    cpu = cpu_seconds(pid) - cpu
    page.wait_for_selector('[data-testid="status"][data-busy="false"]')
    return (shown - released) / 1000, cpu


def set_autogroup_nice(pids, nice):
    """The scheduler weight of these processes' sessions (autogroups; see the module docstring)."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/autogroup", "w") as group:
                group.write(str(nice))
        except OSError:  # gone, or not ours
            pass


def descendants(pid):
    """The process `pid` and every process it started, and they started."""
    found, todo = [], [pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as children:
                todo.extend(int(child) for child in children.read().split())
        except OSError:
            pass
    return found


def run_once(chromium, autogroup_nice=None):
    from playwright.sync_api import sync_playwright

    # The browser is already running when the app starts, as a user's is: its own start-up (about a
    # second here) is not the app's.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        if autogroup_nice is not None:  # the browser's sessions, now that its page's renderer exists
            set_autogroup_nice(descendants(os.getpid()), autogroup_nice)
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "MedSAMSegmentLib.cli", "web", str(IMAGE), "--device", "cpu"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                   cwd=ROOT / "MedSAMSegment")
        try:
            line = process.stdout.readline()
            listening = time.perf_counter() - started
            url = line.split(": ", 1)[1].strip()
            page.goto(url)
            page.wait_for_selector('[data-testid="view-axial"] img[src^="blob:"], [data-testid="view-axial"] img[src^="data:"]',
                                   timeout=120_000)
            first_frame = time.perf_counter() - started
            first_frame_cpu = cpu_seconds(process.pid)
            page.evaluate("window.trame.state.set('mode', 'slice')")
            show_slice(page, WARM_SLICE)
            release_to_preview(page, (60, 60, WARM_SLICE), (200, 200, WARM_SLICE), process.pid)  # loads the model
            show_slice(page, BOX[2])
            cold, cold_cpu = release_to_preview(page, BOX[:3], BOX[3:], process.pid)
            wait_idle(process.pid)  # the neighbouring slices are encoded in the background
            show_slice(page, NEXT_BOX[2])
            wait_idle(process.pid)
            warm, warm_cpu = release_to_preview(page, NEXT_BOX[:3], NEXT_BOX[3:], process.pid)
            return {"listening": listening, "first_frame": first_frame, "first_frame_cpu": first_frame_cpu,
                    "cold": cold, "cold_cpu": cold_cpu, "warm": warm, "warm_cpu": warm_cpu, **memory(process.pid)}
        finally:
            browser.close()
            process.terminate()
            process.wait(30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--autogroup-nice", type=int, help="the scheduler weight of the benchmark's sessions")
    args = parser.parse_args()
    if args.autogroup_nice is not None:
        if os.getsid(0) != os.getpid():  # a session of its own, or the caller's would change too
            os.execvp("setsid", ["setsid", "--wait", sys.executable, *sys.argv])
        set_autogroup_nice([os.getpid()], args.autogroup_nice)
    load_before = os.getloadavg()[0]
    rows = [run_once(args.chromium, args.autogroup_nice) for _ in range(args.repeats)]
    load_after = os.getloadavg()[0]
    now = time.strftime('%Y-%m-%d %H:%M', time.gmtime())
    weight = f"nice {args.autogroup_nice}" if args.autogroup_nice is not None else "as started (nice 0)"
    lines = [
        f"Web app on the bundled brain MR, {os.cpu_count()} CPU cores, {now} UTC; medians (min-max) of "
        f"{len(rows)} app starts. JPEG view stream, LiteMedSAM on the CPU.",
        f"1-minute load average {load_before:.1f} before, {load_after:.1f} after"
        f"{': other processes shared the cores' if max(load_before, load_after) > 1.5 else ''}; "
        f"scheduler weight of the benchmark's and the browser's sessions (autogroups): {weight}.",
        "",
        "| measure | goal | " + " | ".join(when for when, _ in HISTORY) + f" | {now} | min-max |",
        "|---|---|" + "---|" * len(HISTORY) + "---|---|",
    ]
    for key, label, goal, scale, unit in (
            ("listening", "app start -> URL printed (listening)", "", 1, "s"),
            ("first_frame", "app start -> first frame in the page", "<= 6 s", 1, "s"),
            ("first_frame_cpu", "  server CPU time until then", "", 1, "s"),
            ("cold", "box release -> preview visible, slice not encoded", "<= 1.5 s", 1, "s"),
            ("cold_cpu", "  server CPU time meanwhile", "", 1, "s"),
            ("warm", "box release -> preview visible, slice encoded", "<= 300 ms", 1000, "ms"),
            ("warm_cpu", "  server CPU time meanwhile", "", 1000, "ms"),
            ("VmRSS", "server RSS at the end", "<= 2.5 GB", 1, "GiB"),
            ("VmHWM", "server peak RSS", "<= 2.5 GB", 1, "GiB")):
        values = np.array([row[key] * scale for row in rows])
        digits = 0 if unit == "ms" else 2
        lines.append(f"| {label} | {goal} | " + " | ".join(medians[key] for _, medians in HISTORY)
                     + f" | {np.median(values):.{digits}f} {unit} | {values.min():.{digits}f}-{values.max():.{digits}f} {unit} |")
    text = "\n".join(lines) + "\n" + NOTES
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
