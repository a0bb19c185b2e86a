"""The MedSAM effect in the browser: a trame-slicer web app (`medsam-segment web IMAGE ...`).

The app drives the same Qt-free effect controller as the Slicer effect (effect/controller.py); only
the adapter differs:

- editor.py: TrameEditor, the controller's editor interface over trame-slicer's SegmentationEditor
  (selected segment kept in Python, its own undo stack: one apply is one undo step);
- effect.py: the MedSAM box tool as a trame-slicer SegmentationEffect, fed by VTK interactor events
  through the effect pipeline (ProcessInteractionEvent) of each slice view;
- session.py: the scene, the controller and every action of the page (runs in a worker thread,
  watched from the server's asyncio loop), shared by all tabs of one server;
- layout.py: the page (views, tool panel, segment list, stable data-testid handles);
- save.py: which file the app may write, and the atomic write;
- command.py: the `web` sub-command (arguments, safety checks, start-up, printing the URL);
- access.py: who may connect (a random key per start, carried in the URL; same-origin WebSockets).

trame, trame-slicer and torch are imported inside functions: the core install does not need them.
"""
