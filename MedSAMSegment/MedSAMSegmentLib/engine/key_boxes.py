"""Propagation from several key-slice boxes: the first box plus boxes added on further slices.

The result is built in layers, one per box, in the order the boxes were given:

- Layer 0 is the first box's propagation over its own slice range, exactly as with one box.
- Each added box is a key slice k. Its mask on k comes from the user's box (default mode: widened
  when the model under-fills a tight box, see _start_key). From k it propagates up and down with the
  same per-slice procedure and stop rules as one box, towards the nearest key slice of an earlier
  layer (or the end of the slice range), and overwrites the earlier layers' result on the slices
  it reaches. A run ends early where it rejoins that result: on the first slice where its mask
  and the earlier result agree (Dice >= AGREE), or where the earlier result is the better evidence
  (MEET_RULE below), the earlier result is kept from there on. An added box therefore corrects its
  neighbourhood and leaves slices that already agree with it alone, and adding a box decodes only
  the slices it changes. Where the model finds nothing inside the user's box, that slice keeps only
  what the earlier result has inside the box, and its runs end on the next empty slice.
- A run towards a key slice whose box is much larger (GROW_RATIO) heads for a wider part of the
  object (a box added near an organ's end, the first box in its middle). The official prompt, the
  previous mask's box + 3 px, cannot grow as fast as the object does, so such a run also tries
  wider boxes where the mask does not shrink and keeps the one the decoder rates best
  (DefaultRules.grow_margins). Runs between key boxes of similar size prompt as one box does.
- Where both exist, the new run's mask and the earlier result meet slice by slice (MEET_RULE): per
  slice, the mask that best matches the object interpolated between the two key slices: its bounding
  box's IoU with the interpolated box times its size against the interpolated size (the square root
  of the key masks' areas, interpolated as the boxes' sides are). This also guards the slices before
  a rejoin: a run that wanders off and comes back (CT L1 from a box on its 48-voxel edge slice: 36
  voxels for 210 on the slices between), or one that keeps the key slice's size where the object
  shrinks (MR liver), does not replace the earlier masks there. A run that stops (the object ended
  for it) leaves the earlier result beyond its stop.

                 layer 0:   first ... k0 ... last
    layer 1 (k1 > k0):               <--- k1 --->  (until it agrees, or to k0 / the range end)

The slice range is the smallest range holding the first box's range and every key slice; layer 0
still covers only its own range. MEET_RULES are measured in benchmarks/add_boxes.py
(benchmarks/results/add_boxes.md): "join" as above, "box" (no early end: the interpolated-box-and-size
choice on every slice between the two key slices) and "nearest" (the nearer key slice's run).

Re-use (previous=): layer i depends only on layers 0..i-1, its key slice, box and bounds. A later
call re-uses the longest prefix of layers that is unchanged (the same boxes in the same order, the
same key-slice pixels, settings and bounds), so adding a box runs only the new layer. Removing or
changing a box re-runs the layers from it on.
"""

from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError
from .metrics import dice
from .slicing import get_slice, num_slices

MEET_RULES = ("join", "box", "nearest")
MEET_RULE = "join"
AGREE = 0.9  # a run from an added key slice rejoins the earlier result where their masks' Dice reaches this
KEY_FILL = 0.9  # an added key slice's mask whose box covers less of the user's box (IoU) under-fills it
KEY_MARGINS = (0.1, 0.2, 0.3)  # then the user's box widened by these fractions per side is tried too
KEY_IOU_DROP = 0.05  # ... and the best fit to the user's box wins among those rated at most this below it
# A run from an added key slice towards an earlier key slice whose box is at least GROW_RATIO times
# larger (area) heads for a wider part of the object: it may grow (DefaultRules.grow_margins).
# Three wider boxes in one decoder batch: one (25 %) saved 30 % of the CT liver's second box
# (1.43 s for 1.81 s) but on the CT bladder its run wandered (0.905 -> 0.867, 14 slices decoded for 6).
ADDED_GROW = (0.1, 0.25, 0.5)
GROW_RATIO = 1.5


@dataclass(frozen=True)
class Layer:
    """One box's contribution to a key-box result, as re-usable state."""

    key: int  # key slice
    box2d: tuple  # the key slice's box, slice pixels (x0, y0, x1, y1) inclusive
    bounds: tuple  # (first, last) slices its runs may reach, inclusive
    masks: dict  # slice -> bool mask, what this layer writes over the earlier layers
    reasons: dict  # "up from K" / "down from K" -> why that run ended (None: it reached its bound)
    key_content: tuple  # content key of the key slice (a cheap check that `previous` fits)
    settings: tuple = ()  # _layer_settings of an added layer
    slices: tuple = ()  # slices decoded, in order
    prompts: tuple = ()  # model-scale prompt box of each decoder call


def layer_plan(first_box2d, key_slice, first_range, add_boxes, depth):
    """([(key slice, box2d), ...] layer 0 first, (first, last)) for the first box and the added boxes.

    An added box identical to the box already on its slice adds nothing; a different box on a
    key slice is a new layer there (the user's latest box wins).
    """
    layers = [(int(key_slice), tuple(int(v) for v in first_box2d))]
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
        latest = {k: b for k, b in layers}
        if latest.get(index) != box2d:
            layers.append((index, box2d))
    keys = [k for k, _ in layers]
    return layers, (min(first_range[0], *keys), max(first_range[1], *keys))


def _check_in_plane(layers, hw):
    """The layers' boxes clipped to the slice; InputError for a box wholly outside it."""
    h, w = hw
    out = []
    for index, (x0, y0, x1, y1) in layers:
        if x1 < 0 or y1 < 0 or x0 >= w or y0 >= h:
            raise InputError(f"the box on slice {index}, {(x0, y0, x1, y1)}, is outside the slice ({w} x {h} pixels)")
        out.append((index, (max(0, x0), max(0, y0), min(w - 1, x1), min(h - 1, y1))))
    return out


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


def _box_pixels(hw, box2d):
    """bool (H, W): the pixels of an inclusive slice box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box2d
    inside = np.zeros(hw, bool)
    inside[y0 : y1 + 1, x0 : x1 + 1] = True
    return inside


def _size_fit(area, side):
    """How well a mask's area matches a square of `side` pixels (1: exactly; the ratio of the two)."""
    expected = side * side
    return min(area, expected) / max(area, expected, 1e-9)


def _takes_new(rule, s, key, box, other, other_box, new_mask, old_mask, areas=None):
    """Whether slice s, between an added key slice and the earlier key slice `other` (None: the
    range end, where nothing earlier was prompted), takes the added key's run (MEET_RULE).
    areas: the mask areas on the added key slice and on `other`; with them the evidence is the
    bounding box's IoU with the box interpolated between the two key boxes times the mask's size
    against the size interpolated between the two key masks (linear sizes, the square roots of the
    areas, interpolate as the boxes' sides do: a cone's area does not). A box alone prefers a mask
    that leaks to the box's extent over one that under-fills it (MR liver below an added box:
    1,771 px where the truth has 1,022 and the earlier result 769; interpolated, 1,025)."""
    if other is None:
        return True
    nearer_new = abs(s - key) <= abs(s - other)
    if rule == "nearest":
        return nearer_new
    t = (s - key) / (other - key)
    want = (1 - t) * np.asarray(box, float) + t * np.asarray(other_box, float)
    new, old = _box_iou(_mask_box(new_mask), want), _box_iou(_mask_box(old_mask), want)
    if areas is not None:
        side = (1 - t) * np.sqrt(areas[0]) + t * np.sqrt(areas[1])
        new *= _size_fit(float(new_mask.sum()), side)
        old *= _size_fit(float(old_mask.sum()), side)
    return new > old or (new == old and nearer_new)


def _start_key(prop, predictor, source, key, box2d, hw):
    """Segment an added key slice with its propagator (which takes the key's state from it); returns
    why it stopped (nothing found) or None. The model under-fills a tight box, so when the mask's
    bounding box covers less than KEY_FILL of the user's box, the box widened by KEY_MARGINS per side
    is decoded too; each mask is clipped to the user's box (the user says the object is inside it),
    and among the masks the decoder rates within KEY_IOU_DROP of the user box's own, the narrowest box
    whose mask's bounding box covers KEY_FILL of the user's box wins (none: the best fit)."""
    from .propagation import _widened

    reason = prop.run_direction([key], None)
    mask = prop.masks.get(key)
    if mask is None:
        return reason
    inside = _box_pixels(hw, box2d)
    if _box_iou(_mask_box(mask & inside), box2d) < KEY_FILL:
        emb = predictor.embedding(source.key(key), source.image(key))
        boxes = _widened(prop.boxes[-1], KEY_MARGINS, predictor.transform.model_extent(hw))
        wider = predictor.decode_candidates(emb, boxes[1:], hw)  # the user box's mask and rating are known
        ious = [prop.last_iou, *wider.ious]
        mask_of = lambda n: mask if n == 0 else wider.mask(n - 1)  # noqa: E731
        # A wider box is taken only if the decoder rates its mask nearly as well as the user box's
        # (its mask is never made otherwise): around a loosely drawn box it takes in background and
        # the rating drops (synthetic disc, box 2 px loose: 0.96 for the user box, 0.71 at 30 % wider,
        # whose mask fills the box).
        fits = [_box_iou(_mask_box(mask_of(n) & inside), box2d) if iou >= ious[0] - KEY_IOU_DROP else -1.0
                for n, iou in enumerate(ious)]
        # The narrowest box whose mask reaches the user's box (KEY_FILL) wins: a wider one fills the
        # box's corners too, with what lies beside an irregular object (CT stomach, 392-px box, 218 px
        # of stomach: 230 px at 5 % wider, Dice 0.93; 324 px at 20 %, the best fit, Dice 0.80).
        reach = [n for n, fit in enumerate(fits) if fit >= KEY_FILL]
        mask = mask_of(reach[0] if reach else int(np.argmax(fits)))  # the narrowest box on a tie
    if (mask & inside).any():
        prop.masks[key] = mask & inside
        return reason
    del prop.masks[key]  # a mask wholly outside the user's box is not the object the box shows
    return f"nothing found in the box on slice {key}"


def run_context(predictor, window, axis, mode, rules, hw):
    return (predictor.spec.name, predictor.spec.image_size, getattr(window, "key", None), axis, mode, rules, hw)


def _layer_settings(meet):
    """What an added layer depends on besides its box (a changed setting re-runs it)."""
    return (meet, AGREE, KEY_FILL, KEY_MARGINS, KEY_IOU_DROP, ADDED_GROW, GROW_RATIO)


def segment_key_boxes(predictor, volume, window, box2d, slice_range, key_slice, axis, mode, progress,
                      cancel, rules, add_boxes, previous=None, meet=None):
    """PropagationResult for the first box (box2d over slice_range, started at key_slice) plus
    add_boxes [(slice, (x0, y0, x1, y1)), ...]; called by propagation.segment_volume, which has
    validated the first box. See the module docstring."""
    from .propagation import PropagationResult, _Propagator, _SliceSource, one_box_run

    meet = MEET_RULE if meet is None else meet
    if meet not in MEET_RULES:
        raise InputError(f"unknown meeting rule {meet!r}; expected one of {', '.join(MEET_RULES)}")
    depth = num_slices(volume.shape, axis)
    plan, (first, last) = layer_plan(box2d, key_slice, slice_range, add_boxes, depth)
    hw = get_slice(volume, axis, plan[0][0]).shape
    plan = _check_in_plane(plan, hw)
    source = _SliceSource(predictor, volume, window, axis)
    context = run_context(predictor, window, axis, mode, rules, hw)
    old = list(previous.runs) if previous is not None and previous.run_context == context else []

    specs = []  # (key, box, bounds, settings, the older key slice below / above or None)
    for n, (key, box) in enumerate(plan):
        if n == 0:
            specs.append((key, box, tuple(slice_range), (), None, None))
            continue
        older = [k for k, _ in plan[:n] if k != key]
        below, above = max((k for k in older if k < key), default=None), min((k for k in older if k > key), default=None)
        bounds = (first if below is None else below + 1, last if above is None else above - 1)
        specs.append((key, box, bounds, _layer_settings(meet), below, above))
    reused = 0
    while (reused < min(len(old), len(specs)) and isinstance(old[reused], Layer)
           and (old[reused].key, old[reused].box2d, old[reused].bounds, old[reused].settings) == specs[reused][:4]
           and old[reused].key_content == source.key(specs[reused][0])):
        reused += 1
    total = sum(hi - lo + 1 for _, _, (lo, hi), *_ in specs[reused:]) or 1
    calls = {"done": 0}

    def tick(_done, _total):
        calls["done"] += 1
        if progress is not None:
            progress(min(calls["done"], total), total)

    layers, result = [], {}  # result: slice -> (mask, key slice it came from)
    latest_box = {}
    for n, (key, box, bounds, settings, below, above) in enumerate(specs):
        if n < reused:
            layer = replace(old[n], slices=(), prompts=())
        elif n == 0:
            prop = _Propagator(predictor, source, box, hw, mode, tick, cancel, total, rules)
            reasons = one_box_run(prop, key, *bounds)
            layer = first_layer(prop, source, box, key, bounds, reasons)
        else:
            layer = _added_layer(predictor, source, hw, mode, tick, cancel, total, rules, meet, key, box, bounds,
                                 settings, (below, latest_box.get(below)), (above, latest_box.get(above)), result)
        layers.append(layer)
        latest_box[key] = box
        result.update({s: (m, key) for s, m in layer.masks.items()})

    from .slicing import slice_index

    mask = np.zeros(volume.shape, np.uint8)
    for index, (m, _) in result.items():
        mask[slice_index(axis, index)] = m
    if progress is not None and calls["done"] < total:
        progress(total, total)
    reasons = {}
    for layer in layers:
        reasons.update(layer.reasons)
    return PropagationResult(mask, axis, int(key_slice), [s for la in layers for s in la.slices],
                             [b for la in layers for b in la.prompts], reasons, key_slices=sorted(latest_box),
                             key_boxes={k: latest_box[k] for k in sorted(latest_box)},
                             from_key={s: k for s, (_, k) in sorted(result.items())},
                             runs=tuple(layers), run_context=context)


def _added_layer(predictor, source, hw, mode, tick, cancel, total, rules, meet, key, box, bounds, settings,
                 below, above, earlier):
    """The Layer of an added key slice: its key mask, then its runs up and down within bounds,
    each ending where it rejoins the earlier result (meet "join"), then met slice by slice."""
    from .propagation import _Propagator

    # An added box's runs keep wider masks that add on one side only (DefaultRules.wider_min_rim):
    # they run between key slices the user drew, where the meet arbitrates, and a long organ that
    # the official box cuts along its length needs them (CT pancreas after its third box: 0.691
    # with them, 0.556 without, below the 0.664 of two boxes; measured in commit f93ddfd).
    rules = replace(rules, wider_min_rim=0.0)
    prop = _Propagator(predictor, source, box, hw, mode, tick, cancel, total, rules)
    if mode == "default":
        pending = _start_key(prop, predictor, source, key, box, hw)
    else:
        pending = prop.run_direction([key], None)
    key_mask = prop.masks.get(key)
    pending = pending if key_mask is None else None  # an empty key slice is one bad slice

    def areas(other):
        found = earlier.get(other) if other is not None else None
        return None if key_mask is None or found is None else (float(key_mask.sum()), float(found[0].sum()))

    def rejoins(index, mask):
        """Why the run ends on `index` (meet "join"): it agrees with the earlier result there, or the
        earlier result is the better evidence there (_takes_new), and the run would go on from a
        mask that lost."""
        found = earlier.get(index)
        if meet != "join" or found is None:
            return None
        if dice(mask, found[0]) >= AGREE:
            return f"rejoined the earlier result on slice {index}"
        other, other_box = above if index > key else below
        if not _takes_new(meet, index, key, box, other, other_box, mask, found[0], areas(other)):
            return f"the earlier result fits better from slice {index}"
        return None

    def area(b):
        return (b[2] - b[0] + 1) * (b[3] - b[1] + 1)

    lo, hi = bounds
    reasons = {}
    for direction, order, (other, other_box) in (("up", range(key + 1, hi + 1), above),
                                                  ("down", range(key - 1, lo - 1, -1), below)):
        widens = mode == "default" and other is not None and area(other_box) >= GROW_RATIO * area(box)
        # The object between here and the larger key slice fits that slice's box: a mask that
        # grows past its area has leaked (CT IVC near the pelvis: 126 pixels for 28, box 48).
        prop.rules = replace(rules, grow_margins=ADDED_GROW, grow_max_pixels=area(other_box)) if widens else rules
        # Where the user's box found nothing, one more empty slice ends the run (seek=False): a
        # 2 x 2-voxel box on the 3-voxel end of the CT IVC otherwise prompted 27 slices, all empty.
        reasons[f"{direction} from {key}"] = prop.run_direction(list(order), key_mask, pending, rejoins, seek=False)
    masks = {}
    if key not in prop.masks and key in earlier:  # the model found nothing in the user's box: what was
        masks[key] = earlier[key][0].astype(bool) & _box_pixels(hw, box)  # there stays only inside it
    for s, m in prop.masks.items():
        other, other_box = above if s > key else below
        if s == key or s not in earlier or _takes_new(meet, s, key, box, other, other_box, m, earlier[s][0],
                                                      areas(other)):
            masks[s] = m
    return Layer(key, box, bounds, masks, reasons, source.key(key), settings, tuple(prop.slices),
                 tuple(np.asarray(b, np.float32) for b in prop.boxes))


def first_layer(run, source, box2d, key_slice, slice_range, reasons):
    """Layer 0: the first box's propagation (propagation.segment_volume's one-box path), so that a
    later call with `previous=` re-uses it."""
    return Layer(int(key_slice), tuple(int(v) for v in box2d), tuple(slice_range), dict(run.masks),
                 {f"{way} from {key_slice}": why for way, why in reasons.items()}, source.key(key_slice), (),
                 tuple(run.slices), tuple(run.boxes))


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
