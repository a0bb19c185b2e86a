"""Image encoder + prompt decoder with an embedding cache: each slice is encoded at most once."""

import logging
import os
import threading
import time
from contextlib import contextmanager

import numpy as np

from ..errors import MedSAMError
from ..model.device import encoder_dtype, import_torch, select_device
from ..model.registry import get_spec
from .embedding_cache import EmbeddingCache
from .preprocess import transform_for

log = logging.getLogger(__name__)


def _is_out_of_memory(exc):
    torch = import_torch()
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    text = str(exc).lower()
    return isinstance(exc, (oom, MemoryError)) or "out of memory" in text or "can't allocate memory" in text


class Predictor:
    """Loads a model once and answers box prompts on 2D uint8 slices.

    Thread-safe: several segmentations may share one predictor (and its cache); network
    calls are serialised by a lock, which costs nothing on a 2-core CPU or a single GPU.
    Foreground calls (embeddings, decoding) come before background pre-encoding: a background
    encode (BackgroundEncode) runs one encoder step at a time and never starts a step while a
    foreground call waits, so a foreground call waits for at most one step.
    """

    def __init__(self, model=None, checkpoint=None, device="auto", precision="auto", cache_mb=1024,
                 batch_size=None, optimise=True, **resolve_options):
        from ..model.models import load_network

        self.spec = get_spec(model)
        self.device = select_device(device)
        self.network, self.checkpoint = load_network(self.spec, checkpoint, self.device, **resolve_options)
        self.transform = transform_for(self.spec.image_size)
        self.precision = precision
        self.encoder_dtype = encoder_dtype(self.device, precision, self.spec.architecture)
        self.optimise = optimise  # False: the reference encoder and decoder, as the official script runs them
        self._set_fast_paths()
        self.batch_size = batch_size or (8 if self.device.type == "cuda" else 1)
        self.cache = EmbeddingCache(cache_mb * 2**20)
        self.notices = []  # user-facing messages, e.g. a fall-back from GPU to CPU
        self.encoded = 0  # slices encoded by foreground calls (background encodes are not counted)
        self.adopted = 0  # background encodes a foreground call finished instead of starting again
        self._lock = threading.RLock()
        self._turn = threading.Condition(threading.Lock())  # guards the three fields below
        self._foreground = 0  # foreground calls waiting for the network or using it
        self._foreground_ended = float("-inf")  # time.monotonic() when the last one ended
        self._background = {}  # cache key -> BackgroundEncode in progress, for adoption

    @property
    def model_name(self):
        return self.spec.name

    # -- encoder and decoder fast paths ----------------------------------------------------
    def _set_fast_paths(self):
        from ..model.fast_encoder import make_encoder, tune_threads

        self.encoder_generation = getattr(self, "encoder_generation", -1) + 1  # a background encode of an older one is void

        if self.device.type == "cpu":
            tune_threads()
        self._encoder = make_encoder(self.network.image_encoder, self.device, self.encoder_dtype, self.optimise)
        self._decoder = None
        if self.optimise:
            from ..model.fast_decoder import FastMaskDecoder

            with import_torch().inference_mode():
                self._decoder = FastMaskDecoder(self.network)

    def _encode_now(self, images):
        torch = import_torch()
        batch = torch.from_numpy(np.stack(self._prepare(images)))
        batch = batch.to(self.device)
        with torch.inference_mode():
            out = self._encoder(batch)
        self.encoded += len(images)
        return list(out)

    def _prepare(self, images):
        """Model input tensors; a batch is prepared in threads (the resizes release the GIL),
        which is what keeps a GPU busy with ViT-B's 1024-pixel inputs."""
        if len(images) == 1:
            return [self.transform.image_tensor(images[0])]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(len(images), os.cpu_count() or 1)) as pool:
            return list(pool.map(self.transform.image_tensor, images))

    def _fall_back_to_cpu(self):
        torch = import_torch()
        self.notices.append(f"{self.device.type.upper()} ran out of memory; continuing on the CPU (slower)")
        log.warning(self.notices[-1])
        self.device = torch.device("cpu")
        self.network = self.network.to(self.device)
        self.encoder_dtype = encoder_dtype(self.device, "float32")
        self._set_fast_paths()
        self.cache.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _encode_resilient(self, images):
        """Encode; when memory runs out, retry in halves, then (from a GPU) on the CPU."""
        try:
            return self._encode_now(images)
        except (RuntimeError, MemoryError) as exc:
            if not _is_out_of_memory(exc):
                raise
            failure = exc
        torch = import_torch()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        where = "GPU" if self.device.type != "cpu" else "CPU"
        if len(images) > 1:
            half = len(images) // 2
            self.batch_size = max(1, half)
            self.notices.append(f"{where} memory is short; encoding {self.batch_size} slice(s) at a time")
            log.warning(self.notices[-1])
            return self._encode_resilient(images[:half]) + self._encode_resilient(images[half:])
        if self.device.type == "cpu":
            raise MedSAMError(f"out of memory while encoding one slice on the CPU: {failure}") from failure
        self._fall_back_to_cpu()
        return self._encode_now(images)

    # -- foreground calls come first --------------------------------------------------------
    @contextmanager
    def _foreground_call(self):
        """Hold the network for a foreground call; background steps wait until it is over."""
        with self._turn:
            self._foreground += 1
        try:
            with self._lock:
                yield
        finally:
            with self._turn:
                self._foreground -= 1
                self._foreground_ended = time.monotonic()
                self._turn.notify_all()

    @property
    def foreground_busy(self):
        """True while a foreground call waits for the network or uses it."""
        return self._foreground > 0

    def wait_for_quiet(self, quiet_s, cancelled, poll_s=0.02):
        """Block until no foreground call has run for `quiet_s` seconds (the gaps between the slices
        of a propagation are shorter); False as soon as cancelled() is true."""
        with self._turn:
            while not cancelled():
                idle = time.monotonic() - self._foreground_ended
                if not self._foreground and idle >= quiet_s:
                    return True
                self._turn.wait(poll_s if self._foreground else min(poll_s, quiet_s - idle))
        return False

    def background_encode(self, image, key=None):
        """A BackgroundEncode of one uint8 2D slice (nothing runs until its steps are called);
        with its cache key, a foreground call that needs that key finishes it (see embeddings)."""
        return BackgroundEncode(self, image, key)

    def _adopt_background(self, key):
        """The embedding of `key` from a background encode in progress, finished now; or None."""
        with self._turn:
            run = self._background.pop(key, None)
        if run is None or run.generation != self.encoder_generation:
            return None
        try:
            emb = run.finish()
        except (RuntimeError, MemoryError) as exc:  # e.g. out of memory: the normal path copes with it
            log.warning("could not finish a background encode (%s); encoding the slice again", exc)
            return None
        self.adopted += 1
        self.cache.put(key, emb)
        return emb

    def embeddings(self, keys, image_of):
        """Embeddings for `keys`, encoding the missing ones in batches. image_of(key) -> uint8 2D."""
        with self._foreground_call():
            found = {k: self.cache.get(k) for k in keys}
            for k in keys:
                if found[k] is None and self._background:
                    found[k] = self._adopt_background(k)
            missing = [k for k in keys if found[k] is None]
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                for key, emb in zip(chunk, self._encode_resilient([image_of(k) for k in chunk])):
                    self.cache.put(key, emb)
                    found[key] = emb
            return [found[k] for k in keys]

    def embedding(self, key, image):
        return self.embeddings([key], lambda _k: image)[0]

    # -- decoder -----------------------------------------------------------------------
    def _box_prompts(self, model_boxes):
        """(sparse, dense) prompt embeddings of N model-coordinate boxes (inside inference_mode)."""
        boxes = import_torch().as_tensor(np.asarray(model_boxes, np.float32).reshape(-1, 4), device=self.device)
        return self.network.prompt_encoder(points=None, boxes=boxes, masks=None)

    def decode_logits(self, embedding, model_boxes, hw=None):
        """Low-resolution logits (torch, N x model grid) and the decoder's own IoU estimates (N,)
        for N boxes on one embedding; one box (4 numbers) gives N = 1. With the slice's (H, W),
        the fast decoder may leave out the grid's padding, which its mask never reads."""
        torch = import_torch()
        with self._foreground_call(), torch.inference_mode():
            net = self.network
            sparse, dense = self._box_prompts(model_boxes)
            if self._decoder is not None:
                logits, iou = self._decoder(embedding, sparse, None if hw is None else self.transform.logits_extent(hw))
                return logits, iou.float().cpu().numpy()
            logits, iou = net.mask_decoder(
                image_embeddings=embedding.to(self.device, torch.float32)[None],
                image_pe=net.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
            return logits[:, 0], iou[:, 0].float().cpu().numpy()

    def decode(self, embedding, model_box, hw):
        """Mask (bool H x W) for a box already in model coordinates (x0, y0, x1, y1)."""
        logits, _ = self.decode_logits(embedding, model_box, hw)
        return self.transform.mask_from_logits(logits[0], hw)

    def decode_many(self, embedding, model_boxes, hw):
        """Masks (bool H x W) for several boxes on one slice, and the decoder's IoU estimates."""
        logits, iou = self.decode_logits(embedding, model_boxes, hw)
        return [self.transform.mask_from_logits(one, hw) for one in logits], iou

    def decode_candidates(self, embedding, model_boxes, hw):
        """Candidates for several boxes on one slice: the decoder's IoU estimates now, each mask when
        asked. Each mask equals decode_many's for the same boxes, bit for bit."""
        torch = import_torch()
        if self._decoder is None:
            masks, iou = self.decode_many(embedding, model_boxes, hw)
            return Candidates(iou, masks.__getitem__)
        with self._foreground_call(), torch.inference_mode():
            sparse, _ = self._box_prompts(model_boxes)
            state, iou = self._decoder.prompted(embedding, sparse)

        def mask(index):
            with self._foreground_call(), torch.inference_mode():
                logits = self._decoder.logits(state, index, index + 1, self.transform.logits_extent(hw))
                return self.transform.mask_from_logits(logits[0], hw)

        return Candidates(iou.float().cpu().numpy(), mask)

    def segment_2d(self, image, box_xyxy, cache_key=None, official_box=False):
        """uint8 mask of a uint8 2D image for a pixel box (x0, y0, x1, y1), inclusive."""
        image = np.asarray(image)
        hw = image.shape[:2]
        key = cache_key if cache_key is not None else ("array", image.tobytes().__hash__(), hw)
        emb = self.embedding(key, image)
        scale = self.transform.box_official if official_box else self.transform.box_exact
        return self.decode(emb, scale(box_xyxy, hw), hw).astype(np.uint8)

    def clear_cache(self):
        self.cache.clear()


class Candidates:
    """Candidate boxes decoded on one slice: `ious`, the decoder's estimates, and `mask(n)`, made on
    first use. Propagation decodes up to four boxes per slice and keeps one; the upscaling to a mask
    is a third of a decode, so the masks it never looks at are never made."""

    def __init__(self, ious, make_mask):
        self.ious = np.asarray(ious)
        self._make, self._masks = make_mask, {}

    def __len__(self):
        return len(self.ious)

    def mask(self, index):
        if index not in self._masks:
            self._masks[index] = self._make(index)
        return self._masks[index]


class StaleEncodeError(MedSAMError):
    """The predictor changed its encoder (a fall-back to the CPU) during a background encode."""


class BackgroundEncode:
    """One slice encoded one encoder step at a time (fast_encoder.encoder_steps), for background work.

    Each step holds the predictor's lock; `step()` runs none while a foreground call waits or runs,
    and returns None instead: the caller then waits (Predictor.wait_for_quiet) and calls it again,
    or drops the encode (close()). Between steps the predictor is free. The steps are the ones the
    one-shot encode runs, in the same order on the same tensors, so the embedding is the same, bit
    for bit. An encode made with its cache key is adopted by a foreground call that needs that key:
    the foreground runs the remaining steps instead of starting the slice again.
    """

    def __init__(self, predictor, image, key=None):
        from ..model.fast_encoder import encoder_steps

        torch = import_torch()
        self.predictor, self.key = predictor, key
        self.generation = predictor.encoder_generation
        self.steps = encoder_steps(predictor._encoder)
        self.position = 0  # steps done
        self._x = torch.from_numpy(predictor.transform.image_tensor(np.asarray(image))[None])
        if key is not None:
            with predictor._turn:
                predictor._background[key] = self

    @property
    def done(self):
        return self.position == len(self.steps)

    def _advance(self):
        """Run the next step; the caller holds the predictor's lock."""
        torch = import_torch()
        if self.generation != self.predictor.encoder_generation:
            raise StaleEncodeError("the encoder changed during a background encode")
        name, run = self.steps[self.position]
        with torch.inference_mode():
            if self.position == 0:
                self._x = self._x.to(self.predictor.device)
            self._x = run(self._x)
        self.position += 1
        return name

    def step(self, quiet_s=0.0, after=None):
        """Run the next step unless a foreground call waits, runs, or ended less than quiet_s
        seconds ago: the step's name, or None (nothing ran).

        after(name), if given, is called when the step is done, while it still holds the predictor
        (tests use it to make a foreground call arrive in the middle of a step)."""
        p = self.predictor
        with p._lock:
            if self.done or p.foreground_busy or time.monotonic() - p._foreground_ended < quiet_s:
                return None
            name = self._advance()
            if after is not None:
                after(name)
            return name

    def finish(self):
        """Run all remaining steps now (a foreground call adopting this encode; it holds the lock)."""
        while not self.done:
            self._advance()
        return self.result()

    def result(self):
        """The embedding (C, H, W), as Predictor.embeddings would give it."""
        if not self.done:
            raise RuntimeError("the background encode has steps left")
        return self._x[0]

    def close(self):
        """No foreground call can adopt this encode any more."""
        if self.key is not None:
            with self.predictor._turn:
                if self.predictor._background.get(self.key) is self:
                    del self.predictor._background[self.key]
