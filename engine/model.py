"""VisionCLIP: the inference API over an open_clip network (encode, zero-shot classify, save/load)."""
from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from .errors import VisionCLIPError
from .factory import (DEFAULT_MODEL_CONFIG, create_model, create_tokenizer, describe_initial_weights, load_model_config,
                      preprocess_settings)
from .image_runtime import OnnxImageTower, freeze_image_tower, tower_runtime
from .lite_tower import LiteImageNetwork
from .lite_tower import supports as lite_supports
from .preprocess import FundusTransform, ImageSource
from .prompt_cache import cache_path_for, prompt_key, read_prompt_embeddings
from .prompts import PromptSet
from .resources import default_model_path

log = logging.getLogger(__name__)

TEXT_CACHE_SIZE = 20_000
# Input pixels per network pass on the CPU (two images at 320 px). Measured for the default model on
# one core: 32 ms an image in passes of 1 or 2, 47 in passes of 4 and 75 in passes of 32, because a
# larger pass's activations (10 MB an image in the widest layer) neither stay in cache nor come from
# malloc's heap, and the kernel zero-fills their pages again on every pass.
CPU_PIXELS_PER_PASS = 2 * 320 * 320


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise VisionCLIPError(f"unknown device '{device}'; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VisionCLIPError("device 'cuda' asked for, but no CUDA GPU is available")
    return dev


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], name: str,
                 ignore_missing: set[str] = frozenset(), unexpected: Sequence[str] = ()) -> None:
    """Load ``state`` into ``module``, or raise one VisionCLIPError line saying how they disagree
    (keys missing, beyond ``ignore_missing``; keys unexpected; tensors of another shape)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and k not in ignore_missing]
    unexpected = list(unexpected) + [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or reshaped:
        first = (missing or unexpected or reshaped)[0]
        shapes = f", {len(reshaped)} of another shape" if reshaped else ""
        raise VisionCLIPError(f"{name} does not match its architecture ({len(missing)} missing, "
                              f"{len(unexpected)} unexpected keys{shapes}, e.g. {first})")
    module.load_state_dict(state, strict=False)


class VisionCLIP:
    """A loaded model with its preprocessing, tokenizer and a text-embedding cache."""

    def __init__(self, network: torch.nn.Module | None, config: dict, metadata: dict, device: str | torch.device | None = None,
                 image_network: torch.nn.Module | None = None):
        """``network``: the whole open_clip network. ``VisionCLIP.load`` may pass None and an
        ``image_network`` instead (engine.lite_tower: the image tower and ``logit_scale`` only, same
        weights); the whole network is then built on first access to ``network``."""
        self._pending_text: tuple[dict, str] | None = None  # a lean checkpoint's text tower, not yet restored
        self._restore_lock = threading.Lock()  # guards building the whole network and restoring its text tower
        self._lite: torch.nn.Module | None = None
        self._deferred_state: dict[str, torch.Tensor] | None = None  # what the lite tower does not hold
        self._checkpoint_name = "checkpoint"
        self._network: torch.nn.Module | None = None
        self.device = pick_device(device)
        if network is not None:
            self.network = network.to(self.device).eval()
        elif image_network is not None:
            self._lite = image_network.to(self.device).eval()
        else:
            raise VisionCLIPError("VisionCLIP needs a network")
        self.config = config
        self.metadata = metadata
        self.model_id: str = metadata["model_id"]
        pre = preprocess_settings(config)
        self.image_size = pre["image_size"]
        self.transform = FundusTransform(**pre)
        self._tokenizer = None  # built on the first prompt the text tower encodes: stored ones need none
        self.context_length = config["text_cfg"].get("context_length", 77)
        self._text_cache: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self.text_encodings = 0  # prompts actually run through the text tower (cache misses)
        self._stored_text: dict[str, torch.Tensor] = {}  # prompt key -> embedding, from prompt_cache
        self.image_runtime = "eager"  # or "frozen" / "onnx" / "auto": engine.image_runtime; only for a model that no longer trains
        self._fast_towers: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}  # runtime -> copy of the image tower

    # --- construction --------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None, device: str | None = None, trust_pickle: bool = False,
             lite: bool = True) -> "VisionCLIP":
        """Load a checkpoint; with no path, the shipped default model (see engine.resources).

        With ``lite`` (the default) and a config whose image tower engine.lite_tower reproduces, only
        that tower is built now, without importing open_clip; the whole network follows on first use
        of ``network`` (text tower, Grad-CAM, training, saving). ``lite=False`` builds it now."""
        if path is None:
            path = default_model_path()
        path = ckpt.checkpoint_file(path)
        # A lean file's text tower comes from its package after a hash check: seconds that scoring
        # with stored prompt embeddings does not need, so it is restored on first use of the tower.
        lazy_text = ckpt.text_tower_record(path)
        state, config, metadata = ckpt.load_checkpoint(path, trust_pickle=trust_pickle, restore_text=lazy_text is None)
        if lazy_text is not None and "model_id" not in metadata:  # the id hashes the full weights
            state, lazy_text = ckpt.restore_lean(state, lazy_text, path.name), None
        config = load_model_config(config if config is not None else metadata.get("config_name", DEFAULT_MODEL_CONFIG))
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        if "model_id" not in metadata:
            metadata["model_id"] = ckpt.make_model_id(metadata.get("config_name", "model"), state, config=config)
        metadata.setdefault("checkpoint", str(path))
        text_keys = set(lazy_text["keys"]) if lazy_text is not None else set()
        if lite and lite_supports(config):
            with torch.random.fork_rng(devices=[]):  # the caller's random stream is not this module's business
                image_network = LiteImageNetwork(config)
            lite_keys = set(image_network.state_dict())
            rest = {k: v for k, v in state.items() if k not in lite_keys}
            # the tensors the lite tower does not hold must be the text tower's; they are checked
            # against the whole network when it is built
            custom_text = bool(config.get("custom_text")) or "hf_model_name" in config["text_cfg"]
            foreign = [k for k in rest if k.startswith(("visual.", "logit_")) or (custom_text and not k.startswith("text."))]
            if not rest and not text_keys:
                foreign = ["(no text tower)"]
            load_weights(image_network, {k: v for k, v in state.items() if k in lite_keys}, path.name,
                         unexpected=foreign)
            model = cls(None, config, metadata, device, image_network=image_network)
            model._deferred_state = rest
        else:
            network, config = create_model(config, pretrained_towers=False)
            load_weights(network, state, path.name, ignore_missing=text_keys)
            model = cls(network, config, metadata, device)
        model._checkpoint_name = path.name
        model._stored_text = read_prompt_embeddings(cache_path_for(path), model.model_id)
        model._pending_text = None if lazy_text is None else (lazy_text, path.name)
        return model

    def _build_network(self) -> None:
        """The whole open_clip network from the lite tower's weights and the deferred ones (caller holds the lock)."""
        record = self._pending_text[0] if self._pending_text is not None else None
        # possibly inside an inference_mode call (encode_texts): the network's parameters must be
        # ordinary tensors, or Grad-CAM and training could not use them later
        with torch.inference_mode(False), torch.random.fork_rng(devices=[]):
            network, _ = create_model(self.config, pretrained_towers=False)
            state = {k: v.detach().cpu() for k, v in self._lite.state_dict().items()}
            state.update(self._deferred_state or {})
            load_weights(network, state, self._checkpoint_name,
                         ignore_missing=set(record["keys"]) if record is not None else set())
            network = network.to(self.device).eval()
        self._network = network  # before the lite tower goes: image_network always finds one of the two
        self._lite = None
        self._deferred_state = None  # a frozen or ONNX copy of the lite tower (image_runtime) holds the same weights: kept

    @property
    def network(self) -> torch.nn.Module:
        """The whole network, built first if the model was loaded with only its lite image tower, and
        its text tower restored first if it was left for later."""
        if self._network is None or self._pending_text is not None:
            with self._restore_lock:
                if self._network is None:
                    self._build_network()
                if self._pending_text is not None:
                    record, name = self._pending_text
                    with torch.inference_mode(False):
                        frozen = ckpt.restore_lean({}, record, name)
                        self._network.load_state_dict({k: v.float() for k, v in frozen.items()}, strict=False)
                    self._pending_text = None
        return self._network

    @network.setter
    def network(self, network: torch.nn.Module) -> None:
        self._network = network
        self._lite = None
        self._deferred_state = None

    @property
    def image_network(self) -> torch.nn.Module:
        """What encodes images: the whole network once built, else the lite image tower (same weights,
        same embeddings). Has ``visual``, ``encode_image`` and ``logit_scale``; for inference only."""
        lite = self._lite  # read before _network: _build_network sets _network before it drops _lite
        network = self._network
        return network if network is not None else lite

    @property
    def network_built(self) -> bool:
        """Whether the whole open_clip network exists yet (engine.lite_tower)."""
        return self._network is not None

    @classmethod
    def from_config(cls, name_or_config: str | dict = DEFAULT_MODEL_CONFIG, pretrained_towers: bool = True,
                    device: str | None = None, seed: int = 0) -> "VisionCLIP":
        """A fresh model: pretrained towers (when the config names them) and seeded projections."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # same untrained projections, hence the same model id, every time
            network, config = create_model(name_or_config, pretrained_towers=pretrained_towers)
        config_name = name_or_config if isinstance(name_or_config, str) else config.get("name", "custom")
        config_name = Path(config_name).stem
        metadata = {
            "config_name": config_name,
            "trained": False,
            "initial_weights": describe_initial_weights(config, pretrained_towers),
            "training_data": {"synthetic_images": 0, "real_patient_images": 0},
        }
        metadata["model_id"] = ckpt.make_model_id(config_name, network.state_dict(), trained=False, config=config)
        return cls(network, config, metadata, device)

    def save(self, path: str | Path, metadata: dict | None = None, dtype: torch.dtype | None = None,
             full: bool = False) -> str:
        """Write a safetensors checkpoint; returns the model id (a hash of the full weights and config).

        Lean unless ``full``: text-tower tensors equal to the installed package's are left out and
        restored from the package at load, after a hash check.
        """
        meta = {**self.metadata, **(metadata or {})}
        meta.pop("model_id", None)
        meta.pop("checkpoint", None)
        return ckpt.save_checkpoint(path, self.network.state_dict(), self.config, meta, dtype=dtype, lean=not full)

    @property
    def is_trained(self) -> bool:
        return bool(self.metadata.get("trained", False))

    @property
    def logit_scale(self) -> float:
        return float(self.image_network.logit_scale.detach().exp().clamp(max=100.0))

    def _autocast(self):
        if self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    # --- images --------------------------------------------------------------------------
    def image_tensor(self, image: ImageSource | torch.Tensor) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            if image.ndim != 3 or image.shape[0] != 3:
                raise VisionCLIPError(f"image tensor must have shape (3, H, W), not {tuple(image.shape)}")
            return image
        return self.transform(image)

    def encode_images(self, images: ImageSource | Sequence[ImageSource], batch_size: int = 32,
                      progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """L2-normalised image embeddings (N, D) on the CPU, in float32. Images are decoded and
        preprocessed on threads while the network encodes the previous ``batch_size`` of them; the
        first unreadable one raises its VisionCLIPError."""
        from .batch import prepare_inputs

        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise VisionCLIPError("no images given")
        out, done = [], 0
        tower = self.image_tower_for(len(images))
        batch: list[torch.Tensor] = []
        for item in prepare_inputs(self, images, ahead=2 * batch_size if len(images) > 1 else 1):
            if item.error:
                raise VisionCLIPError(item.error)
            batch.append(item.tensor)
            if len(batch) == batch_size or done + len(batch) == len(images):
                out.append(self.encode_tensors(batch, tower))
                done += len(batch)
                batch = []
                if progress:
                    progress(done, len(images))
        return torch.cat(out)

    @property
    def images_per_pass(self) -> int:
        """Images the network takes at once on the CPU: a batch is run through it in passes of this
        many, since larger passes cost more per image (see ``CPU_PIXELS_PER_PASS``)."""
        return max(1, CPU_PIXELS_PER_PASS // (self.image_size * self.image_size))

    def image_tower_for(self, images: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """The image tower a run of ``images`` images uses: the eager one, or under ``image_runtime``
        its frozen or ONNX Runtime copy (engine.image_runtime), built on first use."""
        runtime = tower_runtime(self.image_runtime, self.device, images)
        if runtime == "eager":
            return self.image_network.encode_image
        if runtime not in self._fast_towers:
            visual = self.image_network.visual
            self._fast_towers[runtime] = (OnnxImageTower(visual, self.image_size, images_per_pass=self.images_per_pass)
                                          if runtime == "onnx"
                                          else freeze_image_tower(visual, self.image_size, self.images_per_pass))
        return self._fast_towers[runtime]

    @torch.inference_mode()
    def encode_tensors(self, tensors: Sequence[torch.Tensor],
                       tower: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """L2-normalised embeddings (N, D), on the CPU in float32, of preprocessed (3, S, S) tensors,
        through ``tower`` (by default the eager image tower)."""
        tower = tower or self.image_network.encode_image
        # a (3, S, S) view of an (S, S, 3) array: a plain copy into channels_last, which the eager and
        # frozen towers want; a tower that wants another layout says so, saving a second copy
        batch = torch.empty((len(tensors), *tensors[0].shape),
                            memory_format=getattr(tower, "memory_format", torch.channels_last))
        for row, tensor in zip(batch, tensors):
            row.copy_(tensor)
        batch = batch.to(self.device, non_blocking=True)
        # passes of a few images on the CPU (CPU_PIXELS_PER_PASS), unless the tower runs its own passes
        own_passes = self.device.type != "cpu" or getattr(tower, "runs_passes", False)
        step = len(batch) if own_passes else self.images_per_pass
        out = []
        for start in range(0, len(batch), step):
            with self._autocast():
                emb = tower(batch[start:start + step])
            out.append(F.normalize(emb.float(), dim=-1).cpu())
        return torch.cat(out)

    # --- texts ---------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = create_tokenizer(self.config)
        return self._tokenizer

    def _token_count(self, text: str) -> int:
        tok = self.tokenizer
        if hasattr(tok, "tokenizer"):  # HF tokenizer: counts [CLS] and [SEP]
            return len(tok.tokenizer(text, truncation=False)["input_ids"])
        return len(tok.encode(text)) + 2  # CLIP BPE plus start/end tokens

    @torch.inference_mode()
    def encode_texts(self, texts: str | Iterable[str], use_stored: bool = True) -> torch.Tensor:
        """L2-normalised text embeddings (N, D); each distinct text is encoded once per model, and
        not at all when the checkpoint's stored prompt embeddings hold it (engine.prompt_cache).
        ``use_stored=False`` runs every text through the text tower."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        missing = [t for t in dict.fromkeys(texts) if not use_stored or (self.model_id, t) not in self._text_cache]
        if use_stored and self._stored_text:
            for t in [t for t in missing if prompt_key(t) in self._stored_text]:
                self._remember_text(t, self._stored_text[prompt_key(t)])
            missing = [t for t in missing if (self.model_id, t) not in self._text_cache]
        if missing:
            for t in missing:
                n = self._token_count(t)
                if n > self.context_length:
                    warnings.warn(
                        f"prompt of {n} tokens truncated to the text tower's {self.context_length}: '{t[:60]}...'",
                        stacklevel=2,
                    )
            tokens = self.tokenizer(missing).to(self.device)
            with self._autocast():
                emb = F.normalize(self.network.encode_text(tokens).float(), dim=-1).cpu()
            self.text_encodings += len(missing)
            for t, e in zip(missing, emb):
                self._remember_text(t, e)
        for t in texts:
            self._text_cache.move_to_end((self.model_id, t))
        return torch.stack([self._text_cache[(self.model_id, t)] for t in texts])

    def _remember_text(self, text: str, embedding: torch.Tensor) -> None:
        self._text_cache[(self.model_id, text)] = embedding
        if len(self._text_cache) > TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)

    def class_embeddings(self, prompt_set: PromptSet) -> torch.Tensor:
        """(C, D): per class, the renormalised mean of its normalised prompt embeddings."""
        rows = [F.normalize(self.encode_texts(prompt_set[c]).mean(0), dim=-1) for c in prompt_set.classes]
        return torch.stack(rows)

    def scored_embeddings(self, prompt_set: PromptSet) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, D) embeddings the softmax runs over, one per subclass (per class where a class has
        none), and (S,) the index of the class each belongs to."""
        groups = prompt_set.scored_groups()
        rows = [F.normalize(self.encode_texts(prompts).mean(0), dim=-1) for _, _, prompts in groups]
        owner = torch.tensor([prompt_set.classes.index(cls) for cls, _, _ in groups])
        return torch.stack(rows), owner

    # --- zero-shot -----------------------------------------------------------------------
    def class_and_subclass_probabilities(self, image_embeddings: torch.Tensor,
                                         prompt_set: PromptSet) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C) class probabilities and (N, S) the softmax of the scaled cosine similarities over
        ``prompt_set.scored_groups()`` they sum; the two are the same for a set without subclasses."""
        embeddings, owner = self.scored_embeddings(prompt_set)
        subs = (self.logit_scale * image_embeddings @ embeddings.T).softmax(dim=-1)
        if subs.shape[1] == len(prompt_set):
            return subs, subs
        return subs.new_zeros(len(subs), len(prompt_set)).index_add_(1, owner, subs), subs

    def subclass_probabilities(self, image_embeddings: torch.Tensor, prompt_set: PromptSet) -> torch.Tensor:
        """(N, S) softmax of the scaled cosine similarities over ``prompt_set.scored_groups()``."""
        return self.class_and_subclass_probabilities(image_embeddings, prompt_set)[1]

    def probabilities(self, image_embeddings: torch.Tensor, prompt_set: PromptSet) -> torch.Tensor:
        """(N, C) softmax of the scaled cosine similarities; a class with subclasses gets the sum
        of its subclasses' probabilities, the softmax running over all subclasses."""
        return self.class_and_subclass_probabilities(image_embeddings, prompt_set)[0]

    def classify(self, images: ImageSource | Sequence[ImageSource], prompt_set: PromptSet | dict,
                 batch_size: int = 32) -> list[dict[str, float]]:
        """Per image, {class name: probability} in the prompt set's class order."""
        if not isinstance(prompt_set, PromptSet):
            prompt_set = PromptSet.from_dict(prompt_set)
        probs = self.probabilities(self.encode_images(images, batch_size=batch_size), prompt_set)
        return [dict(zip(prompt_set.classes, map(float, row))) for row in probs]
