"""Training data: weighted mixtures of sources, addressed by a global sample index.

Every sample is a pure function of (seed, global index): which source it comes from, which item,
and its augmentation. So any rank/worker split sees disjoint samples, and a resumed run replays
exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter
import torchvision.transforms.functional as TF

from ..errors import VisionCLIPError
from ..preprocess import FundusTransform, fundus_mask, load_image
from ..synth.dataset import ExitWithParent, worker_start_method

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def index_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def class_key(labels: dict | None, caption: str) -> str:
    """What counts as 'the same label' for soft targets: the set of screening classes, else the caption."""
    if labels:
        from ..synth.schema import labels_to_classes

        return "|".join(sorted(labels_to_classes(labels)))
    return "caption:" + caption


# --- sources -------------------------------------------------------------------------------
class SyntheticSource:
    """The procedural generator, rendered on the fly (infinite)."""

    def __init__(self, seed: int = 0, size: int = 256, conditions=None, pipeline=None, **_):
        from ..synth import SyntheticFundusStream

        self.stream = SyntheticFundusStream(seed=seed, size=size, conditions=conditions, pipeline=pipeline)
        self.length = None
        self.description = f"synthetic generator (seed {seed}, {size} px)"

    def get(self, i: int):
        s = self.stream.sample(i)
        return s["image"], s["caption"], class_key(s["labels"], s["caption"])


def _image_key(name: str) -> str:
    """How a row names its image, as the file stem: "images/0007.png", "7.png" and "7" all give "7"."""
    stem = Path(str(name).strip()).stem
    return str(int(stem)) if stem.isdigit() else stem


class SynFundusFolder:
    """A folder in SynFundus-1M layout: labels.csv (SynFundus-1M columns) and images/<idx>.<ext>.

    The header must carry every SynFundus-1M column (older project names such as ``is_glaucoma``
    count, see engine.synth.schema): a missing one is an error, an unknown one a warning naming it.
    Which image a row describes: the real file has no index column and names its images by row
    position (``<idx>.png``, counting from 0, or from 1 when there is no image 0); a file that has an
    image column (``idx``, as ``visionclip synth`` writes, or ``file_name``, ``image``, ``path``, or
    pandas' unnamed index) is matched through it instead, so a filtered or shuffled copy still pairs
    rows with their images. Zero-padded names match (``0000007.png`` is row 7). Rows whose image is
    absent are skipped with a warning that counts them.

    ``eye_side_zero``: which eye eye_side 0 means ("right", as assumed for SynFundus-1M, or "left").

    Captions (``captions``): "csv" uses the caption column (built when the folder was generated),
    falling back to the labels; "rebuild" builds a fresh description per draw from the findings
    column, for varied wording at the cost of a text-tower pass per draw (the frozen tower's cache
    only helps captions that repeat); "labels" builds from the labels alone in a few wordings per
    label combination, which is how the real SynFundus-1M (labels, no captions) trains through the
    same caption builder, and cheap on CPU because the captions repeat.
    """

    def __init__(self, path: str, images: str = "images", captions: str = "csv", eye_side_zero: str = "right", **_):
        if captions not in ("csv", "rebuild", "labels"):
            raise VisionCLIPError(f"synfundus captions must be csv, rebuild or labels, not '{captions}'")
        self.captions = captions
        from ..synth.schema import IMAGE_NAME_COLUMNS, check_eye_side_zero, check_header, normalise_labels

        check_eye_side_zero(eye_side_zero)
        root = Path(path)
        csv_path = root / "labels.csv"
        if not csv_path.is_file():
            raise VisionCLIPError(f"SynFundus folder {root} has no labels.csv")
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = check_header(reader.fieldnames, str(csv_path))
            rows = list(reader)
        if not rows:
            raise VisionCLIPError(f"{csv_path} lists no images")
        image_dir = root / images
        if not image_dir.is_dir():
            raise VisionCLIPError(f"SynFundus folder {root} has no {images}/ folder")
        by_key = {_image_key(p.name): p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        name_column = next((columns[c] for c in (*IMAGE_NAME_COLUMNS, "unnamed: 0") if c in columns), None)
        first = 0 if "0" in by_key or "1" not in by_key else 1
        self.items, missing = [], []
        for pos, row in enumerate(rows):
            key = _image_key(row[name_column]) if name_column is not None else str(pos + first)
            path_ = by_key.get(key)
            if path_ is None:
                missing.append(key)
                continue
            try:
                labels = normalise_labels(row, eye_side_zero)
            except VisionCLIPError as e:
                raise VisionCLIPError(f"{csv_path} line {pos + 2}: {e}") from None
            self.items.append((path_, labels, labels.get("findings"), labels.get("caption", "").strip()))
        if not self.items:
            raise VisionCLIPError(f"no image of {csv_path} was found in {image_dir}")
        if missing:
            log.warning("%s: %d of %d rows have no image in %s (first: %s); they are skipped",
                        csv_path, len(missing), len(rows), image_dir, missing[0])
        self.length = len(self.items)
        self.description = f"SynFundus-layout folder {root} ({self.length} images)"

    def get(self, i: int, draw: int | None = None):
        from ..synth import build_caption, label_caption

        path, labels, findings, caption = self.items[i % self.length]
        draw = i if draw is None else draw
        if self.captions == "labels":
            # a few wordings per label combination: captions repeat, so the frozen text tower's
            # cache answers nearly every draw (the text tower dominates a CPU step otherwise)
            draw %= 8
        rng = np.random.default_rng(index_seed(draw, 11))
        if self.captions == "rebuild" and findings is not None:
            caption = build_caption(labels, findings, rng) if rng.random() < 0.8 else label_caption(labels, rng)
        elif self.captions == "labels" or not caption:
            caption = build_caption(labels, None, rng)
        return load_image(path), caption, class_key(labels, caption)


class CsvSource:
    """A CSV of image path + caption (paths relative to the CSV's folder), optional label column."""

    def __init__(self, path: str, image_column: str = "path", caption_column: str = "caption", label_column: str | None = None, **_):
        csv_path = Path(path)
        if not csv_path.is_file():
            raise VisionCLIPError(f"caption CSV not found: {csv_path}")
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            for col in (image_column, caption_column):
                if col not in cols:
                    raise VisionCLIPError(f"{csv_path.name} has no column '{col}' (columns: {', '.join(cols)})")
            self.items = [
                (csv_path.parent / r[image_column], r[caption_column].strip(), (r.get(label_column) or "") if label_column else "")
                for r in reader if r.get(image_column) and (r.get(caption_column) or "").strip()
            ]
        if not self.items:
            raise VisionCLIPError(f"{csv_path} lists no image/caption pairs")
        self.length = len(self.items)
        self.description = f"caption CSV {csv_path} ({self.length} pairs)"

    def get(self, i: int):
        path, caption, label = self.items[i % self.length]
        return load_image(path), caption, ("label:" + label) if label else "caption:" + caption


class WebDatasetSource:
    """WebDataset tar shards (image + caption per key), read in order: index i is the i-th sample."""

    def __init__(self, urls: str, image_key: str = "png;jpg;jpeg", caption_key: str = "txt", length: int | None = None, **_):
        import webdataset as wds

        self.urls, self.image_key, self.caption_key = urls, image_key, caption_key
        self._wds = wds
        self._iter = None
        self._pos = 0
        self.length = length
        self.description = f"WebDataset shards {urls}"

    def _restart(self):
        ds = self._wds.WebDataset(self.urls, shardshuffle=False, empty_check=False).to_tuple(self.image_key, self.caption_key)
        self._iter, self._pos = iter(ds), 0

    def get(self, i: int):
        if self.length:
            i %= self.length
        if self._iter is None or i < self._pos:
            self._restart()
        while True:  # read forward to sample i (resume, or samples owned by other ranks)
            try:
                raw_image, raw_caption = next(self._iter)
            except StopIteration:
                if self._pos == 0:
                    raise VisionCLIPError(f"WebDataset {self.urls} holds no samples") from None
                self.length = self._pos  # learnt the size: wrap around
                return self.get(i)
            self._pos += 1
            if self._pos - 1 == i:
                break
        caption = raw_caption.decode("utf-8") if isinstance(raw_caption, bytes) else str(raw_caption)
        return load_image(io.BytesIO(raw_image)), caption.strip(), "caption:" + caption.strip()


SOURCES = {"synthetic": SyntheticSource, "synfundus": SynFundusFolder, "csv": CsvSource, "webdataset": WebDatasetSource}


def build_sources(specs: list[dict]):
    sources, weights = [], []
    for spec in specs:
        kwargs = {k: v for k, v in spec.items() if k not in ("type", "weight")}
        sources.append(SOURCES[spec["type"]](**kwargs))
        weights.append(float(spec.get("weight", 1.0)))
    w = np.asarray(weights)
    return sources, w / w.sum()


# --- augmentation ----------------------------------------------------------------------------
class TrainTransform:
    """Fundus crop + mild geometric and photometric jitter, seeded per sample.

    No flips: captions name the eye side and the disc's position follows it.
    """

    def __init__(self, base: FundusTransform, augment: bool = True, colour_jitter: float = 0.2, hue_jitter: float = 0.0):
        self.base, self.augment = base, augment
        self.colour_jitter, self.hue_jitter = colour_jitter, hue_jitter

    def __call__(self, img: Image.Image, seed: int):
        """The training tensor of ``img``."""
        square = self.base.square_fundus(img)[0]
        if self.augment:
            rng = np.random.default_rng(seed)
            side = square.width
            scale = rng.uniform(0.85, 1.0)
            crop = int(side * scale)
            x0, y0 = rng.integers(0, side - crop + 1, size=2)
            window = (int(x0), int(y0), int(x0) + crop, int(y0) + crop)
            square = square.crop(window)
            angle = float(rng.uniform(-15, 15))
            square = square.rotate(angle, resample=Image.BILINEAR)
            j = self.colour_jitter
            square = ImageEnhance.Brightness(square).enhance(rng.uniform(1 - j, 1 + j))
            square = ImageEnhance.Contrast(square).enhance(rng.uniform(1 - j, 1 + j))
            square = ImageEnhance.Color(square).enhance(rng.uniform(1 - j, 1 + j))
            if self.hue_jitter > 0:  # real cameras range from green-yellow to deep red casts
                square = TF.adjust_hue(square, float(rng.uniform(-self.hue_jitter, self.hue_jitter)))
            if rng.random() < 0.15:  # mild softness only: strong blur is a cataract sign
                square = square.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
        return self.base.to_tensor(square)


class MixtureDataset(torch.utils.data.Dataset):
    """Map-style view of the mixture: item ``g`` is the g-th sample of the global stream."""

    def __init__(self, sources, probs: np.ndarray, transform: TrainTransform, seed: int):
        self.sources, self.probs, self.transform, self.seed = sources, probs, transform, seed
        self._cum = np.cumsum(probs)

    def __len__(self) -> int:  # only batch samplers index it; the stream is unbounded
        return 2**62

    def locate(self, g: int) -> tuple[int, int]:
        if len(self.sources) == 1:
            s = 0
        else:
            u = (index_seed(self.seed, g, 1) % 2**24) / 2**24
            s = int(np.searchsorted(self._cum, u, side="right").clip(0, len(self.sources) - 1))
        src = self.sources[s]
        # finite sources are drawn with replacement by a hash of the index; the generator never repeats
        local = g if src.length is None else index_seed(self.seed, g, 2) % src.length
        return s, local

    def __getitem__(self, g: int):
        s, local = self.locate(g)
        try:
            src = self.sources[s]
            folder = isinstance(src, SynFundusFolder)
            img, caption, key = src.get(local, draw=g) if folder else src.get(local)
            return self.transform(img, index_seed(self.seed, g, 3)), caption, key
        except VisionCLIPError as e:  # a corrupt image is skipped and counted, not fatal
            log.debug("skipping sample %d: %s", g, e)
            return None


def mean_fundus_colour(cfg, base: FundusTransform, n: int = 512) -> list[float]:
    """Mean RGB colour (0-1) inside the field of view over the first ``n`` training samples, unaugmented.

    The target of per-image colour normalisation (``colour_normalise``): every photograph, rendered
    or real, is scaled to the training data's average exposure and white balance.
    """
    sources, probs = build_sources(cfg.sources)
    dataset = MixtureDataset(sources, probs, None, cfg.seed)
    means = []
    for g in range(n):
        s, local = dataset.locate(g)
        src = sources[s]
        try:
            img = (src.get(local, draw=g) if isinstance(src, SynFundusFolder) else src.get(local))[0]
        except VisionCLIPError:  # corrupt images are skipped here as in training
            continue
        rgb = base.resize(base.square_fundus(img)[0])
        fov = fundus_mask(rgb)
        if fov.any():
            means.append(rgb[fov].mean(axis=0) / 255.0)
    if not means:
        raise VisionCLIPError("colour_normalise: no readable training image to measure the mean colour on")
    return [round(float(c), 4) for c in np.mean(means, axis=0)]


def training_preprocess(cfg, pre: dict) -> dict:
    """FundusTransform settings for training images: the model's own, except that with
    ``colour_normalise: inference`` the renders keep their colours and only photographs fed to the
    saved model are normalised."""
    return {**pre, "colour_target": None} if cfg.colour_normalise == "inference" else pre


def collate(batch):
    good = [b for b in batch if b is not None]
    if not good:
        return {"images": None, "captions": [], "keys": [], "skipped": len(batch)}
    return {
        "images": torch.stack([b[0] for b in good]),
        "captions": [b[1] for b in good],
        "keys": [b[2] for b in good],
        "skipped": len(batch) - len(good),
    }


class StepBatchSampler(torch.utils.data.Sampler):
    """Global indices for this rank's micro-batches, from ``start_step`` on."""

    def __init__(self, start_step: int, steps: int, batch_size: int, accum_steps: int, rank: int, world: int):
        self.start, self.steps, self.bs, self.accum, self.rank, self.world = start_step, steps, batch_size, accum_steps, rank, world

    def __len__(self) -> int:
        return (self.steps - self.start) * self.accum

    def __iter__(self):
        for step in range(self.start, self.steps):
            for micro in range(self.accum):
                base = ((step * self.accum + micro) * self.world + self.rank) * self.bs
                yield list(range(base, base + self.bs))


def make_loader(cfg, base_transform: FundusTransform, start_step: int, rank: int, world: int):
    sources, probs = build_sources(cfg.sources)
    finite = sum(s.length for s in sources if s.length is not None) if all(s.length for s in sources) else None
    if finite is not None and finite < cfg.batch_size:
        raise VisionCLIPError(f"batch_size {cfg.batch_size} is larger than the dataset ({finite} samples)")
    dataset = MixtureDataset(sources, probs, TrainTransform(base_transform, cfg.augment, cfg.colour_jitter, cfg.hue_jitter),
                             cfg.seed)
    sampler = StepBatchSampler(start_step, cfg.steps, cfg.batch_size, cfg.accum_steps, rank, world)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=cfg.workers, collate_fn=collate,
        persistent_workers=False, prefetch_factor=4 if cfg.workers else None,
        multiprocessing_context=worker_start_method() if cfg.workers else None,
        worker_init_fn=ExitWithParent() if cfg.workers else None,
    )
    return loader, sources
