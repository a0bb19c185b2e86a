"""Box-prompted segmentation of one slice, or of a slice range by propagation.

mode="official" reproduces the LiteMedSAM 3D procedure (REFERENCE.md) exactly: start on the
middle slice, go up then down, prompt each slice with the previous mask's box (at 256 scale,
+/- 3 px), fall back to the given box when the previous mask is empty, never stop early.

mode="default" starts the same way and differs in two things.
- How the next slice is prompted. The official box hugs the previous mask, and the model
  under-fills its box, so large objects shrink slice after slice (MR liver: 170 px where the truth
  has 1,585). When the official box's mask is smaller than the previous slice's, the default also
  decodes the same box widened by 10 % per side, and keeps the mask that scores best on two
  signals: the decoder's own IoU estimate (is this a clean object for this box?) times its Dice
  with the previous slice's mask (adjacent slices of one object look alike). A leak into a
  neighbour loses on the second, a mask that shrinks because of its box on both. The wider mask
  is kept only if the decoder also rates it better than the official one (by 0.01): a box that
  cuts the object gives a cut mask, rated lower. Where the rating does not improve, the object
  really shrank, and a wider mask that keeps its old size takes it from a similar neighbour
  (iliopsoas, autochthon, vertebrae, bladder); the next slice's box would build on that leak.
  The wider mask must also add to the official one all round: its added pixels border at least
  half of the official mask's edge. Under-fill leaves a rim all round the object; pixels added
  on one side only are mostly a neighbour that the wider box takes in (the next vertebra, the
  tissue by the prostate), which the decoder can rate better. They are kept only where no
  grey-value edge separates them from the official mask (one object cut along its length by
  the official box: a vein), or where the official mask does not continue the previous slice's
  (less than half of it inside): then it is not the object to add to (a lesion that grows
  several-fold between thick slices).
  Objects too thin to have an interior are not offered the wider box (under a pixel there; the
  choice is noise).
- Where it stops. In each direction it stops where the object ends, and does not write that slice:
  - the mask is empty (the official code would re-use the original box, which can land on a
    neighbouring structure);
  - the grey values inside the mask are no longer the object's: their median moves more than
    3 inter-quartile ranges from the key slice's (the model has jumped to another tissue). They
    are read in the mask's interior, away from partial volume at its edge, and objects too thin
    to have an interior are not tested;
  - less than half of the mask lies inside the box that prompted it (it segmented a neighbour).
  One bad slice is not enough: a thin object on a coarse grid is a few pixels that the model can
  miss on one slice, or move a pixel out of its box. On a bad slice the default first retries with
  the last good mask's box widened by 50 % per side (kept only if it passes every rule); failing
  that, it leaves the slice unwritten and prompts the next one from the last good mask, and stops
  only when that slice is bad too (writing neither). An empty key slice is such a bad slice too:
  the slices next to it are prompted with the given box, as the official procedure does, and
  while a direction has found nothing, its empty slices do not stop it (an object not found yet
  cannot have ended; on a coarse grid the model can miss it on the key slice and its neighbour).
It never leaves the given range. The rules are physical, not fitted to the reference cases;
benchmarks/compare_modes.py measures them against the official procedure.
"""

from dataclasses import dataclass, field

import numpy as np

from ..errors import CancelledError, InputError
from .embedding_cache import content_key
from .metrics import dice
from .slicing import get_slice, num_slices, slice_index, split_box, validate_box

MODES = ("default", "official")


@dataclass(frozen=True)
class DefaultRules:
    """The default mode's prompting and stopping rules (see the module docstring)."""

    # The object keeps its tissue: stop when the median grey value inside the new mask moves
    # further than this many inter-quartile ranges from the key slice's median.
    intensity_tolerance: float = 3.0
    min_iqr: float = 4.0  # grey levels: a floor for very uniform objects
    # Grey values are read in the mask's interior (pixels whose four neighbours are in the mask too):
    # edge pixels are partial-volume mixtures with the neighbours. An object whose key-slice interior
    # is smaller than this has no measurable tissue (ribs, small vessels, a cord on 3 mm CT) and gets
    # no grey-value test; a later mask with a smaller interior is read whole (the object is ending).
    min_interior: int = 20
    # The model segments what its box shows: stop when less than this share of the new mask lies
    # inside the box that prompted it (it has jumped to a neighbour).
    min_overlap: float = 0.5
    # When the official box's mask is smaller than the previous slice's (shrinking is what they
    # fix; elsewhere they only risk a leak), also try the official box widened by each of these
    # fractions of its width/height per side. () prompts with the official box only.
    margins: tuple = (0.1,)
    # A wider box's mask is kept only if the decoder rates it (IoU estimate) at least this much
    # better than the official box's. A box that cuts the object gets a cut mask, which the decoder
    # rates lower, and the wider box that shows the whole object is rated higher: the under-fill
    # the wider box is for. Where the rating does not improve, the official mask was not cut: the
    # object shrank, and a wider mask that keeps the previous size (and so the better Dice with the
    # previous mask) gets it from a similar neighbour (iliopsoas, autochthon, vertebrae, bladder).
    # The next slice's box is built from that leak, so it compounds slice after slice. -1 keeps
    # the wider mask whatever its rating (the rule before).
    wider_min_gain: float = 0.01
    # ... and only if the pixels it adds border at least this share of the official mask's edge
    # (4-neighbours). The model under-fills its box all round, so the mask that the wider box
    # restores surrounds the official one; pixels added on one side only are mostly a neighbour
    # next to the object (a neighbouring vertebra, the tissue by the prostate), and the next
    # slice's box would be built on it (but see wider_seam_edge). 0 keeps the wider mask wherever
    # it is added.
    wider_min_rim: float = 0.5
    # Pixels added on one side only are kept where no grey-value edge separates them from the
    # official mask: the gradient on its pixels next to them is under this share of the gradient
    # just outside the wider mask. Then the official box cut one object along its length (a vein,
    # a muscle), not off a neighbour, which has its own outline (vertebra, prostate: about 0.3-1).
    wider_seam_edge: float = 0.25
    # The rim test takes the official mask for the object as it continues from the previous slice,
    # and what the wider mask adds for what lies beside it. It applies only where at least this
    # share of the official mask lies inside the previous slice's mask (half, as for min_overlap).
    # Where most of the official mask lies outside it, the official box found another part of an
    # object that changed between slices (a brain lesion that grows 3.4-fold from one 6.5-mm slice
    # to the next: 22 % of the official mask inside the previous one), and the wider mask is
    # judged on its rating and Dice alone. 0: the rim test always applies.
    wider_rim_continuity: float = 0.5
    # Objects too thin to have an interior (see min_interior) are not offered the wider box: a 10 %
    # margin is under a pixel there, and the choice between two near-equal specks is noise that
    # lets the mask drift off a thin object (a cord, a small vessel) on a coarse grid.
    widen_thin: bool = False
    # A stop needs two bad slices in a row. On a slice where a rule fires, first retry: the last
    # good mask's box widened by each of these fractions of its size per side (a thin object on a
    # coarse grid moves by about its own width per slice, out of a box with a 3-px margin). A retry
    # counts only if it passes every rule against the box that prompted the bad slice. Without a
    # good retry the slice is not written and the next one is prompted from the last good mask;
    # the direction stops only if that slice is bad too (and neither is written).
    retry_margins: tuple = (0.5,)
    confirm_stop: bool = True
    # Where the mask does not shrink, also try the official box widened by these fractions and keep
    # the mask with the highest decoder IoU estimate among those holding GROW_KEEP of the previous
    # mask. Runs from an added key slice (key_boxes.py) use it: a key slice near an object's end
    # propagates towards its middle, where the object grows out of a box that hugs the previous
    # mask (CT gallbladder from its 7-voxel tip: 25 of 73 voxels with the official box, 40 with
    # 50 % wider, which the decoder rates best). () for one box: it never does.
    grow_margins: tuple = ()
    grow_max_pixels: int = 0  # a grown mask larger than this is not kept (0: no limit)


DEFAULT_RULES = DefaultRules()
GROW_KEEP = 0.9  # a grown mask holds at least this share of the previous one (the object grows, it does not move)


@dataclass
class PropagationResult:
    mask: np.ndarray  # uint8 (K, J, I), 0/1
    axis: str
    key_slice: int
    slices: list = field(default_factory=list)  # slice index of each decoder call, in call order
    boxes: list = field(default_factory=list)  # prompt box (model coordinates) of each call
    stop_reasons: dict = field(default_factory=dict)  # direction -> why it stopped
    # Key slices (key_boxes.py): the first box's start slice and the added boxes' slices, sorted;
    # the box on each (slice pixels); for each written slice, the key slice it was propagated from.
    key_slices: list = field(default_factory=list)
    key_boxes: dict = field(default_factory=dict)
    from_key: dict = field(default_factory=dict)
    runs: tuple = field(default=(), repr=False)  # re-usable state for segment_volume(previous=...)
    run_context: tuple = field(default=(), repr=False)


class _SliceSource:
    """Windowed uint8 slices with content keys for the embedding cache."""

    def __init__(self, predictor, volume, window, axis):
        self.volume, self.window, self.axis = volume, window, axis
        self.spec = predictor.spec
        self._images = {}

    def image(self, index):
        img = self._images.get(index)
        if img is None:
            img = self._images[index] = self.window.apply(get_slice(self.volume, self.axis, index))
        return img

    def key(self, index):
        return content_key(self.spec, self.image(index))  # the pre-encoder's keys too

    def forget(self, index):
        self._images.pop(index, None)


def _widened(box, fractions, extent):
    """box, then box widened by each fraction of its width/height per side, clamped to extent."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    out = [np.asarray(box, np.float32)]
    for f in fractions:
        out.append(np.array([max(0.0, x0 - f * w), max(0.0, y0 - f * h),
                             min(float(extent[0]), x1 + f * w), min(float(extent[1]), y1 + f * h)], np.float32))
    return out


def _in_box_fraction(mask, box_pixels):
    x0, y0 = (max(0, int(np.floor(v))) for v in box_pixels[:2])
    x1, y1 = (int(np.ceil(v)) for v in box_pixels[2:])
    inside = mask[y0 : y1 + 1, x0 : x1 + 1].sum()
    return inside / max(1, mask.sum())


def _median_iqr(image, mask):
    q1, med, q3 = np.percentile(image[mask], [25, 50, 75])
    return med, q3 - q1


def _interior(mask):
    """Pixels of mask whose four neighbours are in mask too (the image border counts as outside)."""
    m = np.pad(mask.astype(bool), 1)
    return m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]


def _rim_share(wider, official):
    """Share of official's edge pixels (those with a 4-neighbour outside it) next to a pixel that
    wider adds (4-neighbours): 1 where the wider mask surrounds the official one."""
    official = official.astype(bool)
    edge = official & ~_interior(official)
    return (edge & _next_to(wider.astype(bool) & ~official)).sum() / max(1, edge.sum())


def _seam_edge(image, wider, official):
    """Grey-value gradient on official's pixels next to those wider adds, as a share of the gradient
    just outside wider: near 0 where the added pixels continue the same tissue, about 1 where an
    edge like the object's own outline separates them."""
    gy, gx = np.gradient(image.astype(np.float32))
    gradient = np.hypot(gx, gy)
    official, wider = official.astype(bool), wider.astype(bool)
    seam = official & _next_to(wider & ~official)
    outside = _next_to(wider)
    if not seam.any() or not outside.any():
        return 1.0
    return float(gradient[seam].mean() / max(1e-6, gradient[outside].mean()))


def _next_to(mask):
    """Pixels outside mask with a 4-neighbour in it."""
    m = np.pad(mask, 1)
    return (m[:-2, 1:-1] | m[2:, 1:-1] | m[1:-1, :-2] | m[1:-1, 2:]) & ~mask


class _Propagator:
    def __init__(self, predictor, source, box2d, hw, mode, progress, cancel, total, rules=DEFAULT_RULES):
        self.p, self.src, self.box2d, self.hw, self.mode = predictor, source, box2d, hw, mode
        self.rules = rules
        self.key_stats = None
        self.t = predictor.transform
        self.progress, self.cancel, self.total = progress, cancel, total
        self.done = 0
        self.last_iou = None  # the decoder's IoU estimate of the last slice decoded with one box
        self.masks = {}
        self.slices, self.boxes = [], []

    def _prompt(self, prev_mask):
        """The official prompt: the previous mask's box, else the given box (both at model scale)."""
        box = None if prev_mask is None else self.t.box_from_mask_official(prev_mask)
        return self.t.box_official(self.box2d, self.hw) if box is None else box

    def run_direction(self, order, first_prev, pending=None, until=None, seek=True):
        """Segment slices in `order`; returns why it stopped (None: reached the end). pending: why
        the slice before order[0] was bad (a stop rule fired there), so one more bad slice stops.
        until(index, mask): called on each good slice before it is written; a true value (why)
        ends the run there, that slice unwritten (key_boxes.py: a run that rejoins a result).
        seek: while nothing has been found, empty slices do not stop the run (the first box spans
        the object's slice range; an added box is on one slice, and says nothing of the next ones)."""
        prev = first_prev
        for pos, index in enumerate(order):
            if self.cancel is not None and self.cancel():
                raise CancelledError("segmentation cancelled; nothing was written")
            key = self.src.key(index)
            if key not in self.p.cache:  # encode this slice and the next ones in one batch
                ahead = order[pos : pos + self.p.batch_size]
                lookup = {self.src.key(i): i for i in ahead}
                self.p.embeddings(list(lookup), lambda k: self.src.image(lookup[k]))
            emb = self.p.embedding(key, self.src.image(index))
            box = self._prompt(prev)
            if (self.mode == "default" and self.rules.margins and prev is not None
                    and (self._widens(prev) or self.rules.grow_margins)):
                mask, box = self._best_candidate(emb, box, prev, self.src.image(index))
            else:
                masks, ious = self.p.decode_many(emb, [box], self.hw)
                mask, self.last_iou = masks[0], float(ious[0])  # the rating, for key_boxes._start_key
            self.slices.append(index)
            self.boxes.append(np.asarray(box, np.float32))
            self.done += 1
            if self.progress is not None:
                self.progress(self.done, self.total)
            if self.mode == "default":
                reason = self._stop_reason(mask, prev, box, self.src.image(index))
                if reason and prev is not None and self.rules.retry_margins:
                    mask, reason = self._retry(emb, prev, box, self.src.image(index), mask, reason)
                if reason:
                    self.src.forget(index)
                    if seek and prev is None and not mask.any() and self.rules.confirm_stop:
                        pending = pending or reason  # not found yet: what was never found cannot end
                        continue
                    if not self.rules.confirm_stop or pending is not None:
                        return pending or reason
                    pending = reason  # one bad slice: skip it, prompt the next from the last good mask
                    continue
                pending = None
            self.src.forget(index)
            joined = until(index, mask) if until is not None else None
            if joined:
                return joined
            self.masks[index] = mask
            prev = mask
        return pending

    def _widens(self, prev):
        return self.rules.widen_thin or _interior(prev).sum() >= self.rules.min_interior

    def _best_candidate(self, emb, box, prev, image=None):
        """(mask, box): the official prompt's, unless its mask shrinks and a wider box scores
        better on IoU estimate x Dice with the previous mask, the decoder rates it better
        (wider_min_gain) and it adds to the official mask all round (wider_min_rim)."""
        boxes = _widened(box, self.rules.margins, self.t.model_extent(self.hw))
        masks, ious = self.p.decode_many(emb, boxes[:1], self.hw)
        if masks[0].sum() >= prev.sum() and self.rules.grow_margins:
            return self._grown(emb, boxes[0], masks[0], ious[0], prev)
        if masks[0].sum() >= prev.sum() or not self._widens(prev):  # not shrinking, or too thin to widen
            return masks[0], boxes[0]
        wider = self.p.decode_candidates(emb, boxes[1:], self.hw)
        rated = ious[0] + self.rules.wider_min_gain  # a wider mask the decoder does not rate better is never made
        scores = [ious[0] * dice(masks[0], prev)] + [
            iou * dice(wider.mask(n), prev) if iou >= rated and self._all_round(wider.mask(n), masks[0], prev, image)
            else -1.0 for n, iou in enumerate(wider.ious)]
        best = int(np.argmax(scores))
        return (masks[0], boxes[0]) if best == 0 else (wider.mask(best - 1), boxes[best])

    def _all_round(self, wider, official, prev, image):
        """Whether the pixels `wider` adds border at least wider_min_rim of `official`'s edge, or,
        on one side only, continue it with no grey-value edge between (wider_seam_edge; needs
        image); always where the official mask does not continue the previous slice's
        (wider_rim_continuity)."""
        rules = self.rules
        if rules.wider_min_rim <= 0 or _rim_share(wider, official) >= rules.wider_min_rim:
            return True
        official = official.astype(bool)
        if (official & prev.astype(bool)).sum() < rules.wider_rim_continuity * max(1, official.sum()):
            return True
        return image is not None and _seam_edge(image, wider, official) < rules.wider_seam_edge

    def _grown(self, emb, box, mask, iou, prev):
        """(mask, box): among the official box and its widened versions (grow_margins), the mask with
        the highest decoder IoU estimate that keeps GROW_KEEP of the previous mask and stays within
        grow_max_pixels."""
        wider = _widened(box, self.rules.grow_margins, self.t.model_extent(self.hw))[1:]
        more = self.p.decode_candidates(emb, wider, self.hw)
        limit = self.rules.grow_max_pixels or mask.size
        # Best rated first (the first box on a tie); the first that keeps the previous mask wins, so
        # only the masks rated above the official one, down to the winner, are made.
        for n in sorted(range(len(more)), key=lambda n: -more.ious[n]):
            if more.ious[n] <= iou:
                break
            m = more.mask(n)
            if (m & prev).sum() >= GROW_KEEP * prev.sum() and m.sum() <= limit:
                return m, wider[n]
        return mask, box

    def _retry(self, emb, prev, box, image, mask, reason):
        """(mask, reason) after retrying a bad slice with the last good mask's box widened; the
        first retry that passes every rule, judged against the original prompt `box`, wins."""
        base = self._prompt(prev)
        boxes = _widened(base, self.rules.retry_margins, self.t.model_extent(self.hw))[1:]
        masks, _ = self.p.decode_many(emb, boxes, self.hw)
        for candidate in masks:
            if candidate.any() and self._stop_reason(candidate, prev, box, image) is None:
                return candidate, None
        return mask, reason

    def _stop_reason(self, mask, prev, box, image):
        if not mask.any():
            return "object ended (empty mask)"
        rules = self.rules
        inner = _interior(mask)
        thick = inner.sum() >= rules.min_interior
        if self.key_stats is None:  # the key slice defines the object's grey values
            if thick:
                med, iqr = _median_iqr(image, inner)
                self.key_stats = (med, max(iqr, rules.min_iqr))
            else:
                self.key_stats = (None, None)  # too thin to have a tissue of its own
            return None
        key_med, key_iqr = self.key_stats
        if key_med is not None:
            med = float(np.median(image[inner if thick else mask.astype(bool)]))
            if abs(med - key_med) > rules.intensity_tolerance * key_iqr:
                return f"object ended (grey value {med:.0f} vs {key_med:.0f} on the key slice)"
        if prev is not None and _in_box_fraction(mask, self.t.box_to_pixels(box, self.hw)) < rules.min_overlap:
            return "object ended (mask left its prompt box)"
        return None


def one_box_run(run, key_slice, first, last):
    """Propagate one box from key_slice up to last, then down to first; {"up": why, "down": why}."""
    reasons = {"up": run.run_direction(list(range(key_slice, last + 1)), None)}
    start_mask = run.masks.get(key_slice)
    if run.mode == "default" and start_mask is None and not run.rules.confirm_stop:
        reasons["down"] = "nothing found on the key slice"
    else:  # an empty key slice is one bad slice: the next one down is prompted with the given box
        pending = "nothing found on the key slice" if run.mode == "default" and start_mask is None else None
        reasons["down"] = run.run_direction(list(range(key_slice - 1, first - 1, -1)), start_mask, pending)
    return reasons


def segment_volume(predictor, volume, window, box_ijk, axis="k", key_slice=None, mode="default",
                   progress=None, cancel=None, volume_key=None, rules=DEFAULT_RULES, add_boxes=None,
                   previous=None):
    """Propagate a box through its slice range along `axis`. See module docstring for modes.

    volume: (K, J, I) raw intensities; window: an IntensityWindow; box_ijk inclusive indices.
    volume_key is accepted for API stability; slices are cached by content.
    add_boxes: [(slice, (x0, y0, x1, y1)), ...] boxes on further key slices (slice pixels, inclusive;
    slicing.key_slice_box turns a one-slice-thick index box into one); previous: an earlier result
    for the same volume, window, axis, mode and rules, whose propagations are re-used where they
    cannot change (adding a box decodes only the slices around it). See key_boxes.py. Without
    either, one box behaves exactly as it always has.
    """
    if mode not in MODES:
        raise InputError(f"unknown propagation mode {mode!r}; expected one of {', '.join(MODES)}")
    if volume.ndim != 3:
        raise InputError(f"expected a 3D volume (K, J, I), got shape {volume.shape}")
    box = validate_box(box_ijk, volume.shape, axis)
    box2d, (first, last) = split_box(box, axis)
    if key_slice is None:
        key_slice = int((last - first) / 2 + first)  # the official start slice
    elif not first <= int(key_slice) <= last:
        raise InputError(f"key slice {key_slice} is outside the slice range [{first}, {last}]")
    key_slice = int(key_slice)
    if add_boxes or previous is not None:
        from .key_boxes import segment_key_boxes

        return segment_key_boxes(predictor, volume, window, box2d, (first, last), key_slice, axis, mode,
                                 progress, cancel, rules, add_boxes, previous)
    source = _SliceSource(predictor, volume, window, axis)
    hw = get_slice(volume, axis, key_slice).shape
    run = _Propagator(predictor, source, box2d, hw, mode, progress, cancel, last - first + 1, rules)
    reasons = one_box_run(run, key_slice, first, last)
    mask = np.zeros(volume.shape, np.uint8)
    for index, m in run.masks.items():
        mask[slice_index(axis, index)] = m
    if progress is not None and run.done < run.total:
        progress(run.total, run.total)
    from .key_boxes import first_layer, run_context  # what a later call with previous= re-uses

    return PropagationResult(mask, axis, key_slice, run.slices, run.boxes, reasons, [key_slice],
                             {key_slice: tuple(box2d)}, {i: key_slice for i in sorted(run.masks)},
                             (first_layer(run, source, box2d, key_slice, (first, last), reasons),),
                             run_context(predictor, window, axis, mode, rules, hw))


def segment_slice(predictor, volume, window, axis, index, box_xyxy, volume_key=None):
    """uint8 mask of one slice for a 2D pixel box (x0, y0, x1, y1) inclusive.

    The box is scaled as on the key slice of segment_volume's default mode, so one slice
    segmented alone equals the same slice of a propagation started there.
    """
    if volume.ndim != 3:
        raise InputError(f"expected a 3D volume (K, J, I), got shape {volume.shape}")
    if not 0 <= int(index) < num_slices(volume.shape, axis):
        raise InputError(f"slice {index} is outside the volume along {axis}")
    x0, y0, x1, y1 = box_xyxy
    box_ijk = {"k": (x0, y0, index, x1, y1, index), "j": (x0, index, y0, x1, index, y1),
               "i": (index, x0, y0, index, x1, y1)}[axis]
    box2d, _ = split_box(validate_box(box_ijk, volume.shape, axis), axis)
    source = _SliceSource(predictor, volume, window, axis)
    key = source.key(int(index))
    emb = predictor.embedding(key, source.image(int(index)))
    hw = source.image(int(index)).shape
    return predictor.decode(emb, predictor.transform.box_official(box2d, hw), hw).astype(np.uint8)
