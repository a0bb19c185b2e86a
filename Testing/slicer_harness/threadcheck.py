"""Record GUI and MRML use outside the main thread (Slicer's rule: Qt and MRML on the main thread only).

Checked: every stub widget property change and signal, the scripted effect's and the editor
widget's API, slicer.app.processEvents and slicer.util's dialogs, and MRML events of the scene and
of the nodes a session observes (a modification from a worker fires its events in that worker).
Not checked: MRML *reads* from a worker thread (they fire no event).
"""

import threading
import traceback

violations = []  # (what, thread name, the caller's frame)


def check(what):
    thread = threading.current_thread()
    if thread is not threading.main_thread():
        frame = traceback.extract_stack(limit=4)[0]
        violations.append((what, thread.name, f"{frame.filename}:{frame.lineno}"))


def observeOnMainThread(vtkObject, events, label):
    """Observe `events` of a VTK object: each one fired off the main thread is a violation."""
    return [vtkObject.AddObserver(event, lambda caller, name, label=label: check(f"{label} {name}"))
            for event in events]
