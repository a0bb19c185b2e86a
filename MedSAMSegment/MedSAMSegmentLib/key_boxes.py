"""Propagation from several key-slice boxes: the first box plus boxes added on further slices.

The first box gives the slice range and its start slice (the key slice). Each added box is one
in-plane box on one slice (an "added key slice"). Every key slice is segmented from its own box,
and propagated both ways with the same per-slice procedure as one box (propagation._Propagator,
both modes, the same stop rules), up to the next key slice or the end of the range:

    first ... k0 ----up---->   <---down---- k1 ----up---->  ... last
              (beyond k0: k0's down run)      (beyond k1: k1's up run)

On an added key slice (default mode) the user's box is the prompt, but the model under-fills a
tight box: when the mask's bounding box covers less than 90 % of the box, the box widened by 10 %
per side is decoded too, both masks are clipped to the user's box (the object is inside it), and
the higher decoder IoU estimate x fit to the box wins (_start_key). The first box's key slice is
segmented exactly as with one box.

Between two key slices a < b each slice may have two masks, one from a's run up and one from b's
run down. Where they meet the result takes the better one (MEET_RULE, measured in
benchmarks/add_boxes.py; see benchmarks/results/add_boxes.md):
  - "nearest": the propagation from the nearer key slice;
  - "box":     per slice, the mask whose bounding box best matches (IoU) the box interpolated
               linearly between the two key boxes;
  - "iou":     per slice, the mask with the higher decoder IoU estimate (one extra decoder call
               per candidate).
A slice that only one run reached (the other stopped: the object ended for it) takes that run's
mask. The slice range is the smallest range holding the first box's range and every key slice.

Re-use ("adding a box re-runs only the slices whose result can change"): a run depends only on its
key slice, its box, its direction and how far it may go. Adding a key slice between a and b only
shortens a's run up and b's run down, and a shortened run is a prefix of the old one (each slice
depends only on the slices before it), so `previous=` result's runs are cut, not re-run. Only the
new key slice's two runs call the decoder (embeddings are cached, so no encoder work). A run that
must go further than before (a box removed, the range grown) is run again. `previous` must come
from the same volume, window, axis, mode and rules: the settings and the key slices' pixels are
checked, and anything that does not match is simply run again.
"""

from dataclasses import dataclass, replace

import numpy as np

from .errors import InputError
from .slicing import get_slice, num_slices

MEET_RULES = ("nearest", "box", "iou")  # "agree" (a seam where both agree most) measured, dropped
MEET_RULE = "box"
KEY_FILL = 0.9  # an added key slice's mask whose box covers less of the user's box (IoU) under-fills it
KEY_MARGINS = (0.1,)  # then the user's box widened by these fractions per side is tried too


@dataclass(frozen=True)
class Run:
    """One propagation from a key slice in one direction, as re-usable state."""

    key: int  # key slice
    box2d: tuple  # the key slice's box, slice pixels (x0, y0, x1, y1) inclusive
    direction: str  # "up": key, key+1, ...; "down": key-1, key-2, ...
    bound: int  # the first slice it may not reach (exclusive end)
    order: tuple  # slices decoded, in order (the last one is the stop slice when reason is set)
    prompts: tuple  # model-scale prompt box of each decoded slice
    masks: dict  # slice -> bool mask, the slices written
    reason: object  # why it stopped; None: it reached its bound
    key_content: tuple  # content key of the key slice (a cheap check that `previous` fits)

    def inside(self, index, bound=None):
        bound = self.bound if bound is None else bound
        return index < bound if self.direction == "up" else index > bound

    def stopped_early(self):
        """It stopped before its last allowed slice (so it would stop there whatever its bound)."""
        last_allowed = self.bound - 1 if self.direction == "up" else self.bound + 1
        return self.reason is not None and (not self.order or self.order[-1] != last_allowed)

    def covers(self, bound):
        """Whether this run, cut at `bound`, equals a fresh run to `bound` (a prefix of it)."""
        return self.stopped_early() or self.inside(bound) or bound == self.bound

    def cut(self, bound):
        keep = [n for n, s in enumerate(self.order) if self.inside(s, bound)]
        stopped_inside = self.reason is not None and (not self.order or self.inside(self.order[-1], bound))
        return replace(self, bound=bound, order=tuple(self.order[n] for n in keep),
                       prompts=tuple(self.prompts[n] for n in keep),
                       masks={s: m for s, m in self.masks.items() if self.inside(s, bound)},
                       reason=self.reason if stopped_inside else None)


def key_plan(first_box2d, key_slice, first_range, add_boxes, depth):
    """(sorted key slices, {slice: box2d}, (first, last)) for the first box and the added boxes.

    An added box on a slice that already has one replaces it (the user's latest box wins).
    """
    boxes = {int(key_slice): tuple(int(v) for v in first_box2d)}
    for n, item in enumerate(add_boxes or ()):
        try:
            index, box2d = item
            index = int(index)
            box2d = tuple(int(round(float(v))) for v in box2d)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"added box {n + 1} must be (slice, (x0, y0, x1, y1)), got {item!r}") from None
        if len(box2d) != 4:
            raise InputError(f"added box {n + 1} must have 4 in-plane numbers (x0, y0, x1, y1), got {len(box2d)}")
        if not 0 <= index < depth:
            raise InputError(f"added box {n + 1}: slice {index} is outside the volume (valid 0..{depth - 1})")
        x0, y0, x1, y1 = box2d
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise InputError(f"added box {n + 1} on slice {index} is too small or inverted: {box2d}")
        boxes[index] = box2d
    keys = sorted(boxes)
    first, last = min(first_range[0], keys[0]), max(first_range[1], keys[-1])
    return keys, boxes, (first, last)


def _check_in_plane(boxes, hw):
    h, w = hw
    for index, (x0, y0, x1, y1) in boxes.items():
        if x1 < 0 or y1 < 0 or x0 >= w or y0 >= h:
            raise InputError(f"the box on slice {index}, {(x0, y0, x1, y1)}, is outside the slice ({w} x {h} pixels)")
    return {i: (max(0, b[0]), max(0, b[1]), min(w - 1, b[2]), min(h - 1, b[3])) for i, b in boxes.items()}


def _mask_box(mask):
    ys, xs = np.nonzero(mask)
    return None if xs.size == 0 else (xs.min(), ys.min(), xs.max(), ys.max())


def _box_iou(a, b):
    if a is None or b is None:
        return 0.0
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _meet(rule, a, b, up, down, key_boxes, decoder_iou):
    """{slice: (mask, key slice)} for the slices strictly between key slices a < b."""
    out, both = {}, []
    for s in range(a + 1, b):
        if s in up and s in down:
            both.append(s)
        elif s in up or s in down:
            out[s] = (up[s], a) if s in up else (down[s], b)
    if not both:
        return out
    nearer_a = lambda s: s - a <= b - s  # noqa: E731
    if rule == "nearest":
        pick_a = {s: nearer_a(s) for s in both}
    elif rule == "box":
        ba, bb = np.asarray(key_boxes[a], float), np.asarray(key_boxes[b], float)
        pick_a = {}
        for s in both:
            t = (s - a) / (b - a)
            want = (1 - t) * ba + t * bb
            sa, sb = _box_iou(_mask_box(up[s]), want), _box_iou(_mask_box(down[s]), want)
            pick_a[s] = sa > sb or (sa == sb and nearer_a(s))
    elif rule == "iou":
        pick_a = {}
        for s in both:
            sa, sb = decoder_iou(a, "up", s), decoder_iou(b, "down", s)
            pick_a[s] = sa > sb or (sa == sb and nearer_a(s))
    else:
        raise InputError(f"unknown meeting rule {rule!r}; expected one of {', '.join(MEET_RULES)}")
    for s in both:
        out[s] = (up[s], a) if pick_a[s] else (down[s], b)
    return out


def _start_key(prop, predictor, source, key, box2d, hw):
    """Segment an added key slice with its propagator (which takes the key's state from it); returns
    why it stopped (nothing found) or None. The model under-fills a tight box, so when the mask's
    bounding box covers less than KEY_FILL of the user's box, the box widened by KEY_MARGINS per side
    is decoded too; each mask is clipped to the user's box (the user says the object is inside it)
    and the higher decoder IoU estimate x fit to the user's box wins."""
    from .propagation import _widened

    reason = prop.run_direction([key], None)
    mask = prop.masks.get(key)
    if mask is None:
        return reason
    x0, y0, x1, y1 = box2d
    inside = np.zeros(hw, bool)
    inside[y0 : y1 + 1, x0 : x1 + 1] = True
    if _box_iou(_mask_box(mask & inside), box2d) < KEY_FILL:
        emb = predictor.embedding(source.key(key), source.image(key))
        boxes = _widened(prop.boxes[-1], KEY_MARGINS, predictor.transform.model_extent(hw))
        masks, ious = predictor.decode_many(emb, boxes, hw)
        scores = [iou * _box_iou(_mask_box(m & inside), box2d) for m, iou in zip(masks, ious)]
        mask = masks[int(np.argmax(scores))]  # the first (the user's box itself) on a tie
    if (mask & inside).any():
        prop.masks[key] = mask & inside
    return reason


def run_context(predictor, window, axis, mode, rules, hw):
    return (predictor.spec.name, predictor.spec.image_size, getattr(window, "key", None), axis, mode, rules, hw)


def segment_key_boxes(predictor, volume, window, box2d, slice_range, key_slice, axis, mode, progress,
                      cancel, rules, add_boxes, previous=None, meet=None):
    """PropagationResult for the first box (box2d over slice_range, started at key_slice) plus
    add_boxes [(slice, (x0, y0, x1, y1)), ...]; called by propagation.segment_volume, which has
    validated the first box. See the module docstring."""
    from .propagation import PropagationResult, _Propagator, _SliceSource  # propagation imports us lazily

    meet = MEET_RULE if meet is None else meet
    if meet not in MEET_RULES:
        raise InputError(f"unknown meeting rule {meet!r}; expected one of {', '.join(MEET_RULES)}")
    depth = num_slices(volume.shape, axis)
    keys, boxes, (first, last) = key_plan(box2d, key_slice, slice_range, add_boxes, depth)
    hw = get_slice(volume, axis, keys[0]).shape
    boxes = _check_in_plane(boxes, hw)
    first_box = tuple(int(v) for v in box2d)
    source = _SliceSource(predictor, volume, window, axis)
    context = run_context(predictor, window, axis, mode, rules, hw)
    old = {}
    if previous is not None and getattr(previous, "runs", None) and previous.run_context == context:
        old = {(r.key, r.box2d, r.direction): r for r in previous.runs}

    plan = []  # (key, direction, bound, re-usable old run or None)
    for n, key in enumerate(keys):
        up_bound = keys[n + 1] if n + 1 < len(keys) else last + 1
        down_bound = keys[n - 1] if n > 0 else first - 1
        for direction, bound in (("up", up_bound), ("down", down_bound)):
            prior = old.get((key, boxes[key], direction))
            if prior is not None and not (prior.covers(bound) and prior.key_content == source.key(key)):
                prior = None
            plan.append((key, direction, bound, prior))
    fresh_up = {key for key, direction, _, prior in plan if direction == "up" and prior is None}
    total = sum(abs(bound - key) + (direction == "down" and key not in fresh_up)
                for key, direction, bound, prior in plan if prior is None) or 1

    calls = {"done": 0}

    def tick(_done, _total):
        calls["done"] += 1
        if progress is not None:
            progress(min(calls["done"], total), total)

    runs, slices, prompts, reasons = [], [], [], {}
    propagators = {}
    for key, direction, bound, prior in plan:
        if prior is not None:
            run = prior.cut(bound)
        else:
            prop = propagators.get(key)
            if prop is None:  # one propagator per key slice: the down run uses the key slice's state
                prop = propagators[key] = _Propagator(predictor, source, boxes[key], hw, mode, tick, cancel,
                                                      total, rules)
            calls_start = start = len(prop.slices)
            refine = mode == "default" and (key != key_slice or boxes[key] != first_box)
            if direction == "up":
                if refine:
                    reason = _start_key(prop, predictor, source, key, boxes[key], hw)
                    if not reason and key + 1 < bound:
                        reason = prop.run_direction(list(range(key + 1, bound)), prop.masks[key])
                else:
                    reason = prop.run_direction(list(range(key, bound)), None)
            else:
                if not prop.slices:  # up run re-used: redo the key slice, which sets the key's state
                    if refine:
                        _start_key(prop, predictor, source, key, boxes[key], hw)
                    else:
                        prop.run_direction([key], None)
                    start = len(prop.slices)
                key_mask = prop.masks.get(key)
                if mode == "default" and key_mask is None:
                    reason = "nothing found on the key slice"
                else:
                    reason = prop.run_direction(list(range(key - 1, bound, -1)), key_mask)
            order = tuple(prop.slices[start:])
            run = Run(key, boxes[key], direction, bound, order, tuple(prop.boxes[start:]),
                      {s: prop.masks[s] for s in order if s in prop.masks}, reason, source.key(key))
            slices.extend(prop.slices[calls_start:])
            prompts.extend(prop.boxes[calls_start:])
        runs.append(run)
        reasons[f"{direction} from {key}"] = run.reason

    by_key = {(r.key, r.direction): r for r in runs}

    def decoder_iou(key, direction, index):
        run = by_key[(key, direction)]
        prompt = run.prompts[run.order.index(index)]
        emb = predictor.embedding(source.key(index), source.image(index))
        return float(predictor.decode_many(emb, [prompt], hw)[1][0])

    chosen = {}  # slice -> (mask, key slice it came from)
    for n, key in enumerate(keys):
        up = by_key[(key, "up")].masks
        if key in up:
            chosen[key] = (up[key], key)
        if n == 0:
            chosen.update({s: (m, key) for s, m in by_key[(key, "down")].masks.items()})
        if n + 1 == len(keys):
            chosen.update({s: (m, key) for s, m in up.items() if s != key})
        else:
            nxt = keys[n + 1]
            chosen.update(_meet(meet, key, nxt, up, by_key[(nxt, "down")].masks, boxes, decoder_iou))

    from .slicing import slice_index

    mask = np.zeros(volume.shape, np.uint8)
    for index, (m, _) in chosen.items():
        mask[slice_index(axis, index)] = m
    if progress is not None and calls["done"] < total:
        progress(total, total)
    return PropagationResult(mask, axis, int(key_slice), slices, prompts, reasons, key_slices=keys,
                             key_boxes={k: boxes[k] for k in keys},
                             from_key={s: k for s, (_, k) in sorted(chosen.items())},
                             runs=tuple(runs), run_context=context)


def single_box_runs(run, source, box2d, key_slice, slice_range, reasons):
    """The two Run records of a one-box propagation (propagation.segment_volume's plain path), so that
    a later call with `previous=` re-uses them."""
    first, last = slice_range
    out = []
    for direction, bound in (("up", last + 1), ("down", first - 1)):
        picked = [n for n, s in enumerate(run.slices) if (s >= key_slice) == (direction == "up")]
        order = tuple(run.slices[n] for n in picked)
        out.append(Run(int(key_slice), tuple(int(v) for v in box2d), direction, bound, order,
                       tuple(run.boxes[n] for n in picked), {s: run.masks[s] for s in order if s in run.masks},
                       reasons.get(direction), source.key(key_slice)))
    return tuple(out)


def added_boxes_from_index_boxes(index_boxes, shape_kji, axis, what="added box"):
    """[(slice, (x0, y0, x1, y1)), ...] for one-slice-thick index boxes (i0, j0, k0, i1, j1, k1);
    InputError naming the box ("{what} 2: ...") when one is not one slice thick or not inside the
    volume. The command line and MedSAMLogic call this before any model work."""
    from .slicing import key_slice_box

    out = []
    for n, box in enumerate(index_boxes or ()):
        try:
            out.append(key_slice_box(box, shape_kji, axis))
        except InputError as exc:
            raise InputError(f"{what} {n + 1} ({' '.join(map(str, box))}): {exc}") from None
    return out
