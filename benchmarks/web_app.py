"""The web app's response times in headless Chromium, on the bundled brain MR; prints a Markdown table.

Measured on a real `medsam-segment web` process (its own model, cold caches):
  - app start -> first frame: from launching the process to the first axial image in the page
    (and to the URL line, i.e. the server listening); Chromium is already running, as a user's
    browser is, and opens the URL as soon as it is printed;
  - box release -> key-slice preview visible: "this slice" mode with preview on release (the default);
    the time from the mouse button's release to the first view frame after the preview's status,
    on a slice the app has not encoded yet, then with a second box on the same, now encoded slice.
    The model is loaded first by a warm-up box on another slice (not counted). The slice is shown and
    the box drawn at once, so background pre-encoding of the shown slice may already have started;
  - server RSS: the process's resident and peak resident memory at the end (VmRSS, VmHWM).

    nice -n 10 python benchmarks/web_app.py [--repeats 3] [--output benchmarks/results/web_app.md]
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
WARM_SLICE = 6
# The medians measured before the speed-ups of issue 13 (commit fa2a24f; 2026-11-30 05:43 UTC, 3 starts,
# the machine quiet; the browser was then launched after the URL line, adding its own start-up to the
# first frame). Kept as the reference row of the results; "" where it was not recorded.
BEFORE = {"listening": "3.95 s", "first_frame": "6.94 s", "first_frame_cpu": "5.70 s", "cold": "1.87 s",
          "cold_cpu": "2.30 s", "warm": "849 ms", "warm_cpu": "1040 ms", "VmRSS": "1.22 GiB", "VmHWM": ""}

OBSERVE = """() => {
  window.__frames = [];
  window.__status = [];
  if (window.__observing) return;  // one observer of each: a frame is one entry
  window.__observing = true;
  const img = document.querySelector('[data-testid="view-axial"] img');
  new MutationObserver(() => window.__frames.push(performance.now()))
    .observe(img, {attributes: true, attributeFilter: ['src']});
  const status = document.querySelector('[data-testid="status"]');
  new MutationObserver(() => window.__status.push([performance.now(), status.innerText]))
    .observe(status, {childList: true, subtree: true, characterData: true});
}"""


NOTES = """
Server CPU time is the server process's own (all its threads): it depends on other processes far less
than the wall times do. "Server CPU time meanwhile" includes everything the server does in that span:
the box's run, renders and JPEG frames, and background pre-encoding.

What made the difference from the "before" column (issue 13):
- slice views without multisampling: trame-slicer asks for 8 samples, which on Mesa's software
  renderer made each 711 x 866 frame cost 65-100 ms instead of 13-29 ms;
- one render per frame: trame-rca rendered every change twice (a "still" frame at a higher JPEG
  quality 5 frame periods later), and that second render held the event loop, delaying the first
  frame's delivery too;
- a box's run no longer waits for a background encoder step of a neighbouring slice, whose low
  priority stretched it to several times its length: the neighbours are held from the press to 1 s
  after the release or the run, and a run pauses the pre-encoder; the slice in view goes on;
- the first pre-encoding, which loads torch and the model, starts once the views have stayed on
  their slices for 0.3 s (or at a press): the first frames are rendered before it;
- the result's status line goes out before its frames, and the result is shown as soon as the job
  ends (no 50 ms poll).
The browser is now started before the app (a user's browser is already open); in the "before" run it
was launched after the URL line, which added its own start-up to the first frame.
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


def release_to_preview(page, start, end, pid):
    """(seconds from the button's release to the first frame after the preview's status line,
    server CPU seconds meanwhile)."""
    page.evaluate(OBSERVE)
    mouse = page.mouse
    mouse.move(*screen(page, start))
    mouse.down()
    mouse.move(*screen(page, end), steps=4)
    released = page.evaluate("performance.now()")
    cpu = cpu_seconds(pid)
    mouse.up()
    try:
        page.wait_for_function("window.__status.some(s => s[1].startsWith('Preview:'))", timeout=600_000)
    except Exception:
        raise RuntimeError(f"no preview; the page says: {page.inner_text('[data-testid=status]')!r}") from None
    page.wait_for_function("(() => { const t = window.__status.find(s => s[1].startsWith('Preview:'))[0];"
                           " return window.__frames.some(f => f >= t); })()", timeout=10_000)
    shown = page.evaluate("(() => { const t = window.__status.find(s => s[1].startsWith('Preview:'))[0];"
                          " return window.__frames.find(f => f >= t); })()")
    cpu = cpu_seconds(pid) - cpu
    page.wait_for_selector('[data-testid="status"][data-busy="false"]')
    return (shown - released) / 1000, cpu


def run_once(chromium):
    from playwright.sync_api import sync_playwright

    # The browser is already running when the app starts, as a user's is: its own start-up (about a
    # second here) is not the app's.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
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
            page.evaluate(f"window.trame.state.set('slice_axial', {WARM_SLICE})")
            page.wait_for_function(f"window.trame.state.get('slice_axial') === {WARM_SLICE}")
            release_to_preview(page, (60, 60, WARM_SLICE), (200, 200, WARM_SLICE), process.pid)  # loads the model
            key = BOX[2]
            page.evaluate(f"window.trame.state.set('slice_axial', {key})")
            page.wait_for_function(f"window.trame.state.get('slice_axial') === {key}")
            cold, cold_cpu = release_to_preview(page, BOX[:3], BOX[3:], process.pid)
            warm, warm_cpu = release_to_preview(page, (BOX[0] - 2, BOX[1] - 2, key), (BOX[3] + 2, BOX[4] + 2, key),
                                                process.pid)
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
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows = [run_once(args.chromium) for _ in range(args.repeats)]
    load_after = os.getloadavg()[0]
    lines = [
        f"Web app on the bundled brain MR, {os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        "medians (min-max) of {n} app starts. JPEG view stream, LiteMedSAM on the CPU.".format(n=len(rows)),
        f"1-minute load average {load_before:.1f} before, {load_after:.1f} after"
        f"{': other processes shared the cores' if max(load_before, load_after) > 1.5 else ''}.",
        "",
        "| measure | goal | before (05:43, quiet) | median | min-max |",
        "|---|---|---|---|---|",
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
        lines.append(f"| {label} | {goal} | {BEFORE[key]} | {np.median(values):.{digits}f} {unit} | "
                     f"{values.min():.{digits}f}-{values.max():.{digits}f} {unit} |")
    text = "\n".join(lines) + "\n" + NOTES
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
