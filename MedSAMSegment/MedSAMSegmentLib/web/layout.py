"""The page: the three slice views and the MedSAM panel, with stable data-testid handles for tests.

Handles: view-axial / view-coronal / view-sagittal; preview, apply, cancel, undo, redo, save; status
(data-busy "true" while any model work runs); probe (text starts with the voxel indices I J K);
error (the last refusal or failure, as text).
"""

from .session import VIEWS


def _testid(name):
    return [f'data-testid="{name}"']


def buildLayout(server, session):
    from trame.ui.vuetify3 import VAppLayout
    from trame.widgets import client, html
    from trame.widgets import vuetify3 as v3

    guarded = session.guarded
    state = server.state
    state.trame__title = "MedSAM segment"
    with VAppLayout(server, full_height=True, theme="dark") as layout:
        client.Style(
            "html { overflow: hidden; } .medsam-view { position: relative; flex: 1; min-height: 0; border: 1px solid #222;"
            " background: black; } .medsam-view > * { position: absolute; inset: 0; } .medsam-panel { width: 330px; overflow-y: auto; padding: 8px; }"
            " .medsam-row { display: flex; gap: 6px; align-items: center; margin: 4px 0; }"
            " .medsam-status { white-space: pre-wrap; font-size: 0.85rem; }")
        with html.Div(style="display: flex; height: 100vh;"):
            with html.Div(classes="medsam-panel"):
                _panel(server, session, guarded, html, v3)
            with html.Div(style="flex: 1; display: flex; min-width: 0; height: 100vh;"):
                _views(server, session, html, v3, client)
    return layout


def _views(server, session, html, v3, client):
    def viewBox(key):
        view = session.views[key]
        with html.Div(style="display: flex; flex-direction: column; flex: 1; min-height: 0;"):
            with html.Div(classes="medsam-view", raw_attrs=_testid(f"view-{key}")):
                client.ServerTemplate(name=server.translator.translate_key(view.get_singleton_tag()))
            v3.VSlider(v_model=(f"slice_{key}",), min=0, max=(f"slice_{key}_max",), step=1, hide_details=True, density="compact",
                       raw_attrs=_testid(f"slider-{key}"), classes="mx-2", style="flex: 0 0 auto;")

    with html.Div(style="flex: 2; display: flex; flex-direction: column; min-width: 0; height: 100%;"):
        viewBox(VIEWS[0][0])
    with html.Div(style="flex: 1; display: flex; flex-direction: column; min-width: 0; height: 100%;"):
        for key, _factory in VIEWS[1:]:
            viewBox(key)


def _panel(server, session, guarded, html, v3):
    html.H3("MedSAM")
    v3.VSelect(label="Slices", v_model=("mode",), items=("[{title: 'This slice', value: 'slice'}, "
                                                         "{title: 'Propagate', value: 'propagate'}]",),
               density="compact", hide_details=True, classes="my-1", raw_attrs=_testid("mode"))
    v3.VSelect(label="Range", v_model=("range",), v_show="mode === 'propagate'",
               items=("[{title: 'Slices around the box', value: 'around'}, {title: 'Whole volume', value: 'volume'}]",),
               density="compact", hide_details=True, classes="my-1", raw_attrs=_testid("range"))
    v3.VTextField(label="Slices each side", v_model_number=("slices_around",), type="number",
                  v_show="mode === 'propagate' && range === 'around'", density="compact", hide_details=True,
                  classes="my-1")
    v3.VSelect(label="Apply", v_model=("apply_mode",), items=("[{title: 'Add to the segment', value: 'add'}, "
                                                               "{title: 'Replace in these slices', value: 'set'}]",),
               density="compact", hide_details=True, classes="my-1")
    v3.VSelect(label="Intensity", v_model=("intensity",),
               items=("[{title: 'MedSAM rule (CT/MR guessed)', value: 'auto'}, {title: 'CT 40/400', value: 'CT'}, "
                      "{title: 'MR 0.5-99.5 %', value: 'MR'}, {title: 'The view window/level', value: 'view'}]",),
               density="compact", hide_details=True, classes="my-1")
    v3.VCheckbox(label="Drag adds a key-slice box (or Shift+drag)", v_model=("add_box",), density="compact",
                 hide_details=True)
    v3.VCheckbox(label="Preview a 'this slice' box on release", v_model=("preview_on_release",), density="compact",
                 hide_details=True)
    with html.Div(classes="medsam-row"):
        v3.VBtn("Preview", click=guarded(lambda: session.run("preview")), disabled=("busy",), size="small",
                raw_attrs=_testid("preview"))
        v3.VBtn("Apply", click=guarded(lambda: session.run("apply")), disabled=("busy",), size="small",
                color="primary", raw_attrs=_testid("apply"))
        v3.VBtn("Cancel", click=guarded(session.cancel), size="small", raw_attrs=_testid("cancel"))
    with html.Div(classes="medsam-row"):
        v3.VBtn("Undo", click=guarded(session.undo), disabled=("busy || !can_undo",), size="small",
                raw_attrs=_testid("undo"))
        v3.VBtn("Redo", click=guarded(session.redo), disabled=("busy || !can_redo",), size="small",
                raw_attrs=_testid("redo"))
        v3.VBtn("Save", click=guarded(session.save), disabled=("busy || !can_save",), size="small",
                raw_attrs=_testid("save"))
    v3.VProgressLinear(model_value=("progress",), v_show="show_progress", indeterminate=("show_progress && progress === 0",),
                       classes="my-1")
    html.Div("{{ status }}", classes="medsam-status",
             raw_attrs=_testid("status") + [''':data-busy="busy ? 'true' : 'false'"'''])
    html.Div("{{ error }}", v_show="error", classes="medsam-status text-red-lighten-2", raw_attrs=_testid("error"))
    html.Div("Probe: {{ probe }}", classes="medsam-status", raw_attrs=[])
    html.Span("{{ probe }}", style="display: none;", raw_attrs=_testid("probe"))
    html.Div("Model intensity rule: {{ model_window || 'not run yet' }}", classes="medsam-status",
             raw_attrs=_testid("model-window"))
    html.Div("Output: {{ output }}", classes="medsam-status text-grey")
    html.Div("{{ saved ? 'Saved ' + saved : '' }}", classes="medsam-status", raw_attrs=_testid("saved"))

    html.H4("Window / level", classes="mt-3")
    with html.Div(classes="medsam-row"):
        v3.VTextField(label="Window", v_model_number=("window",), type="number", density="compact",
                      hide_details=True, raw_attrs=_testid("window"))
        v3.VTextField(label="Level", v_model_number=("level",), type="number", density="compact",
                      hide_details=True, raw_attrs=_testid("level"))

    html.H4("Segments", classes="mt-3")
    v3.VSelect(v_model=("active_segment",), items=("segments",), item_title="name", item_value="id",
               density="compact", hide_details=True, raw_attrs=_testid("segment-select"))
    with html.Div(classes="medsam-row"):
        v3.VTextField(label="Name", v_model=("segment_name",), density="compact", hide_details=True,
                      change=(guarded(session.renameSegment), "[$event.target.value]"),
                      raw_attrs=_testid("segment-name"))
        html.Input(type="color", v_model=("segment_color",),
                   change=(guarded(session.recolorSegment), "[$event.target.value]"),
                   raw_attrs=_testid("segment-color"))
    v3.VBtn("Add segment", click=guarded(session.addSegment), size="small", raw_attrs=_testid("add-segment"))
