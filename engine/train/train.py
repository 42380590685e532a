"""The training loop: contrastive pretraining with checkpoints, exact resume, validation and logs."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .. import __version__
from .. import checkpoint as ckpt
from ..errors import VisionCLIPError
from ..factory import create_model, create_tokenizer, describe_initial_weights, preprocess_settings
from ..model import VisionCLIP
from ..preprocess import FundusTransform
from .checkpoints import (checkpoint_paths, latest_checkpoint, read_latest_readable, rotate_checkpoints,
                          save_training_state)
from .data import make_loader, mean_fundus_colour, training_preprocess
from .distributed import DistEnv
from .loss import make_loss
from .masks import MaskHead, mask_loss
from .params import TrainConfig
from .style import add_mixstyle

log = logging.getLogger(__name__)


# --- model pieces ----------------------------------------------------------------------------
class CachedTextFeatures:
    """Pooled outputs of a frozen HF text tower, computed once per distinct caption."""

    def _tokenize(self, texts: list[str]) -> torch.Tensor:
        # Pad to the longest caption, not the full context: masked mean pooling gives the same
        # features, and the text tower is the costliest part of a CPU step.
        hf = self.tokenizer.tokenizer
        return hf(texts, padding=True, truncation=True, max_length=self.tokenizer.context_length, return_tensors="pt").input_ids

    def __init__(self, text_tower, tokenizer, device, max_items: int = 200_000):
        self.text, self.tokenizer, self.device, self.max_items = text_tower, tokenizer, device, max_items
        self.cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            self.text.transformer.eval()  # frozen tower: features without dropout, same every time
            tokens = self._tokenize(missing).to(self.device)
            mask = (tokens != self.text.config.pad_token_id).long()
            out = self.text.transformer(input_ids=tokens, attention_mask=mask)
            pooled = self.text.pooler(out, mask).float().cpu()
            if len(self.cache) + len(missing) > self.max_items:
                self.cache.clear()
            self.cache.update(zip(missing, pooled))
        return torch.stack([self.cache[c] for c in captions]).to(self.device)


class ContrastiveStep(torch.nn.Module):
    """Forward of one training step, as a module so DDP sees (and syncs) every call.

    With a ``mask_head`` it also returns the head's mask logits, computed from the image tower's
    ``mask_head.layer`` output of the same forward pass.
    """

    def __init__(self, model, cached_text: bool, mask_head: MaskHead | None = None):
        super().__init__()
        self.model, self.cached_text, self.mask_head = model, cached_text, mask_head

    def forward(self, images, text_input):
        image_features = F.normalize(self.model.encode_image(images), dim=-1)
        text = self.model.text.proj(text_input) if self.cached_text else self.model.encode_text(text_input)
        mask_logits = self.mask_head.from_tapped() if self.mask_head is not None else None
        return image_features, F.normalize(text, dim=-1), self.model.logit_scale.exp(), mask_logits


def param_groups(model, cfg: TrainConfig, mask_head: torch.nn.Module | None = None):
    """AdamW groups: no weight decay on gains, biases and the temperature (open_clip's rule); an
    auxiliary mask head, when there is one, gets its own group last."""
    decay, no_decay, text_proj = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if cfg.text_proj_lr is not None and name.startswith("text.proj"):
            text_proj.append(p)
        elif p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": cfg.weight_decay}]
    if text_proj:
        groups.append({"params": text_proj, "weight_decay": cfg.weight_decay, "lr": cfg.text_proj_lr})
    if mask_head is not None:
        groups.append({"params": list(mask_head.parameters()), "weight_decay": cfg.weight_decay})
    return [g for g in groups if g["params"]]


# The parameters that map features into the shared space (and the temperature): the "linear probe"
# of LP-FT. Everything else trainable is feature extraction, held still while these settle.
HEAD_PREFIXES = ("visual.head", "visual.proj", "visual.attnpool", "text.proj", "text_projection", "logit_scale", "logit_bias")


def feature_parameters(model) -> list[torch.nn.Parameter]:
    """Trainable parameters outside the projection heads: those ``head_only_steps`` holds still."""
    return [p for name, p in model.named_parameters() if p.requires_grad and not name.startswith(HEAD_PREFIXES)]


def warmup_cosine(cfg: TrainConfig):
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def label_id(key: str) -> int:
    return int(hashlib.blake2b(key.encode(), digest_size=7).hexdigest(), 16)


# --- validation ------------------------------------------------------------------------------
def synthetic_validation_set(cfg: TrainConfig, size: int):
    """Held-out synthetic images, an equal share per condition, from seeds training never uses."""
    from ..synth.benchmark import benchmark_samples

    images, labels = zip(*benchmark_samples(cfg.val_synthetic, cfg.val_seed, size, pipeline=cfg.val_pipeline))
    return list(images), list(labels)


def validate(network, config, step: int, cfg: TrainConfig, val_set, device, eval_dirs, train_mode) -> dict:
    """Zero-shot metrics of ``network`` on the held-out synthetic set and the real eval folders."""
    from ..evaluate import compute_metrics, evaluate
    from ..prompts import load_prompt_set

    model = VisionCLIP(network, config, {"model_id": f"training-step-{step}"}, device=device)
    results: dict = {"step": step}
    try:
        screening = load_prompt_set(None)
        images, labels = val_set
        probs = model.probabilities(model.encode_images([np.asarray(i) for i in images]), screening).numpy()
        m = compute_metrics(labels, probs, screening.classes)
        results["val/synthetic_balanced_accuracy"] = m["balanced_accuracy"]
        results["val/synthetic_mean_auc"] = m["mean_auc"]
        for d in eval_dirs:  # real photographs: measured, never trained on
            r = evaluate(model, d, load_prompt_set(cfg.eval_prompts))
            results[f"eval/{Path(d).name}/balanced_accuracy"] = r["balanced_accuracy"]
            results[f"eval/{Path(d).name}/mean_auc"] = r["mean_auc"]
    finally:
        train_mode()
    return results


def _measure_colour_target(cfg: TrainConfig, config: dict) -> list[float]:
    """Measure the training data's mean fundus colour at the model's input size (unnormalised) and
    write it into the model config's ``preprocess_cfg``; returns it."""
    target = mean_fundus_colour(cfg, FundusTransform(**{**preprocess_settings(config), "colour_target": None}))
    config.setdefault("preprocess_cfg", {})["colour_target"] = target
    return target


def set_colour_target(checkpoint: str | Path, config_path: str | Path, out: str | Path) -> str:
    """Give a trained model ``colour_normalise: inference`` after the fact; returns the new model id.

    The colour target is measured exactly as training measures it (the first 512 samples of the
    config's training data, at the model's input size); the weights are copied unchanged.
    """
    from .params import load_config

    model = VisionCLIP.load(checkpoint)
    cfg = load_config(config_path)
    config = json.loads(json.dumps(model.config))
    target = _measure_colour_target(cfg, config)
    meta = {k: v for k, v in model.metadata.items() if k not in ("model_id", "checkpoint")}
    meta["colour_target_from"] = {"weights_of": model.model_id, "config": str(config_path), "colour_target": target}
    return ckpt.save_checkpoint(Path(out), model.network.state_dict(), config, meta, dtype=torch.float16, lean=True)




# --- setup -------------------------------------------------------------------------------------
def prepare_run_dir(run_dir: Path, cfg: TrainConfig, env: DistEnv, resume: bool) -> None:
    """Fail in one line, before any work, on an unwritable folder, a missing resume point or eval data."""
    if resume and (not run_dir.is_dir() or latest_checkpoint(run_dir) is None):
        raise VisionCLIPError(f"nothing to resume: {run_dir} holds no complete checkpoint")
    if env.is_master:
        try:
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            probe = run_dir / ".write_test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise VisionCLIPError(f"output folder {run_dir} is not writable ({e.strerror})") from None
    for d in cfg.eval_data:
        if not (Path(d) / "labels.csv").is_file():
            raise VisionCLIPError(f"eval data folder {d} has no labels.csv")


def build_model(cfg: TrainConfig, device: torch.device) -> tuple[torch.nn.Module, dict, bool]:
    """The network with the config's input size, preprocessing, freezing and dropout applied.

    Returns (network, model config to save with it, whether the text tower's features are cached).
    """
    model, config = create_model(cfg.model, pretrained_towers=cfg.pretrained_towers)
    if cfg.mixstyle > 0:  # training only: the hooks pass features through unchanged in eval mode
        add_mixstyle(model.visual, cfg.mixstyle_layers, cfg.mixstyle)
    if cfg.image_size:
        config["vision_cfg"]["image_size"] = cfg.image_size  # timm/resnet towers accept any size
    if cfg.local_contrast is not None:  # saved with the weights, so inference preprocesses the same way
        config.setdefault("preprocess_cfg", {})["local_contrast"] = cfg.local_contrast
    if cfg.colour_normalise != "off":  # measured on the training data, saved with the weights for inference
        _measure_colour_target(cfg, config)
    model.to(device)
    is_hf_text = "hf_model_name" in config["text_cfg"]
    if is_hf_text:
        model.lock_text_tower(unlocked_layers=cfg.text_unlocked_layers, freeze_layer_norm=True)
        for p in model.text.proj.parameters():
            p.requires_grad = True  # the projection into the shared space always learns
    if cfg.image_unlocked_groups is not None and hasattr(model, "lock_image_tower"):
        # BN statistics are handled by set_train_mode(); open_clip's own BN freezing would drop
        # the activation fused into timm's BatchNormAct2d layers.
        model.lock_image_tower(unlocked_groups=cfg.image_unlocked_groups, freeze_bn_stats=False)
        for p in model.visual.head.parameters() if hasattr(model.visual, "head") else []:
            p.requires_grad = True
    trunk = getattr(model.visual, "trunk", None)
    if cfg.image_dropout is not None and hasattr(trunk, "drop_rate"):
        trunk.drop_rate = cfg.image_dropout
    if cfg.channels_last:
        model.visual.to(memory_format=torch.channels_last)
    return model, config, is_hf_text and cfg.text_unlocked_layers == 0


def set_train_mode(model: torch.nn.Module, cfg: TrainConfig) -> None:
    model.train()
    if cfg.freeze_bn_stats:  # keep ImageNet statistics: small synthetic batches would skew them
        for m in model.visual.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def _precision(cfg: TrainConfig, device: torch.device):
    p = cfg.precision
    if p == "auto":
        p = "bf16" if device.type == "cuda" else "fp32"
    if p == "fp32":
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if p == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if p == "fp16" and device.type == "cuda" else None
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


def _plot(run_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if any(k.startswith(("val/", "eval/")) for k in r)]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    a.plot([r["step"] for r in train], [r["loss"] for r in train])
    a.set_xlabel("step"), a.set_ylabel("training loss"), a.set_title("training loss")
    keys = sorted({k for r in val for k in r if k.endswith("balanced_accuracy")})
    for k in keys:
        pts = [(r["step"], r[k]) for r in val if k in r]
        b.plot(*zip(*pts), marker="o", label=k)
    b.set_xlabel("step"), b.set_ylabel("balanced accuracy"), b.set_title("zero-shot validation")
    if keys:
        b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(run_dir / "training.png")
    plt.close(fig)


# --- the run -----------------------------------------------------------------------------------
class Trainer:
    """One training run, in the units open_clip splits ``main`` / ``train_one_epoch`` into:
    ``__init__`` (setup and resume), ``forward_backward`` + ``optimizer_step`` (one step),
    ``validate`` (and keep the best), ``save`` (checkpoint and rotation), and ``run`` (the loop).

    ``callbacks``: objects with ``on_step_end(trainer, step)``, called after each optimiser step
    has been logged, validated and saved (tests use one to kill the process mid-run).
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path, env: DistEnv, resume: bool = False,
                 config_path: str | None = None, callbacks=()):
        self.cfg, self.run_dir, self.env, self.config_path = cfg, Path(run_dir), env, config_path
        self.callbacks = list(callbacks)
        prepare_run_dir(self.run_dir, cfg, env, resume)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        self.model, self.config, self.cached_text = build_model(cfg, env.device)
        self.train_mode()
        self.pre = preprocess_settings(self.config)
        self.tokenizer = create_tokenizer(self.config)
        self.text_features = CachedTextFeatures(self.model.text, self.tokenizer, env.device) if self.cached_text else None
        # timm's EMA, decay warmed up as 1 - (1 + step)^-3/4 so short runs average a growing window
        # (SWAD-style weight averaging for domain shift); it follows the unwrapped model.
        self.ema = None
        if cfg.ema_decay is not None:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay, use_warmup=True, warmup_power=3 / 4)
        self.shipped = self.ema.module if self.ema is not None else self.model  # validated, kept as best, saved last
        self.mask_head = None
        if cfg.mask_loss_weight > 0:
            self.mask_head = MaskHead.attach(self.model.visual, cfg.mask_layer, self.pre["image_size"]).to(env.device)
            if not any(p.requires_grad for p in self.model.visual.get_submodule(cfg.mask_layer).parameters()):
                # towers unlock from the top, so every layer before a frozen one is frozen too
                raise VisionCLIPError(f"config: mask_layer '{cfg.mask_layer}' is frozen (image_unlocked_groups "
                                      f"{cfg.image_unlocked_groups}): the mask loss would train only its own head; "
                                      "choose a later layer or unlock more groups")
        self.step_module = self._wrap(ContrastiveStep(self.model, self.cached_text, self.mask_head))
        self.held_still = feature_parameters(self.model) if cfg.head_only_steps else []
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg, self.mask_head), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(cfg))
        self.loss_fn = make_loss(cfg.loss, env.rank, env.world_size)
        self.autocast, self.scaler = _precision(cfg, env.device)
        self.step, self.extra = 0, {"skipped": 0, "best": None, "samples": 0}
        if resume:
            self.resume()
        self.loader, sources = make_loader(cfg, FundusTransform(**training_preprocess(cfg, self.pre)), self.step,
                                           env.rank, env.world_size, with_masks=self.mask_head is not None)
        self.manifest = {
            "real_patient_images": 0,
            "sources": [s.description for s in sources],
            "generator": f"engine.synth (VisionCLIP {__version__})",
            "seed": cfg.seed,
        }
        self.val_set = synthetic_validation_set(cfg, self.pre["image_size"]) if env.is_master and cfg.val_synthetic > 0 else None
        self.metrics_file = None
        if env.is_master:
            (self.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
            self.metrics_file = open(self.run_dir / "metrics.jsonl", "a")

    def _wrap(self, step_module: torch.nn.Module) -> torch.nn.Module:
        if self.env.distributed:
            step_module = torch.nn.parallel.DistributedDataParallel(
                step_module, device_ids=[self.env.device.index] if self.env.device.type == "cuda" else None)
        if self.cfg.compile:
            step_module = torch.compile(step_module)
        return step_module

    def train_mode(self) -> None:
        set_train_mode(self.model, self.cfg)

    def state_modules(self) -> dict:
        """Modules whose weights live in the training state, not in the model file."""
        modules = {}
        if self.ema is not None:
            modules["ema"] = self.ema.module
        if self.mask_head is not None:
            modules["mask_head"] = self.mask_head
        return modules

    def resume(self) -> None:
        step, weights, state = read_latest_readable(self.run_dir)
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise VisionCLIPError(f"checkpoint {checkpoint_paths(self.run_dir, step)[0].name} is from another "
                                  f"architecture than config '{self.cfg.model}'")
        self.extra = state.apply(self.optimizer, self.scheduler, self.state_modules())
        self.step = state.step
        if self.env.is_master:
            log.info("resumed from step %d", self.step)

    # --- one step ------------------------------------------------------------------------------
    def forward_backward(self, batch: dict, sync: bool = True) -> dict[str, float]:
        """Forward and backward of one micro-batch (gradients scaled for accumulation); returns
        its losses: ``loss`` (what is optimised) and, with the mask head, its two parts."""
        cfg, device = self.cfg, self.env.device
        images = batch["images"].to(device, non_blocking=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        text_in = self.text_features(batch["captions"]) if self.cached_text else self.tokenizer(batch["captions"]).to(device)
        no_sync = contextlib.nullcontext() if (sync or not self.env.distributed) else self.step_module.no_sync()
        with no_sync:
            with self.autocast():
                img_f, txt_f, scale, mask_logits = self.step_module(images, text_in)
                if cfg.loss == "soft_labels":
                    ids = torch.tensor([label_id(k) for k in batch["keys"]], device=device)
                    loss = self.loss_fn(img_f.float(), txt_f.float(), scale.float(), ids)
                else:
                    loss = self.loss_fn(img_f.float(), txt_f.float(), scale.float())
            parts = {}
            if mask_logits is not None:
                if "masks" in batch:
                    dense = mask_loss(mask_logits, batch["masks"].to(device), batch["mask_valid"].to(device))
                else:  # no sample of this batch has masks: a zero that still reaches the head (DDP)
                    dense = mask_logits.float().sum() * 0.0
                parts = {"contrastive_loss": float(loss.detach()), "mask_loss": float(dense.detach())}
                loss = loss + cfg.mask_loss_weight * dense
            (self.scaler.scale(loss / cfg.accum_steps) if self.scaler else loss / cfg.accum_steps).backward()
        return {"loss": float(loss.detach()), **parts}

    def trained_parameters(self):
        params = list(self.model.parameters())
        return params + list(self.mask_head.parameters()) if self.mask_head is not None else params

    def optimizer_step(self, loss: float) -> float:
        """Average ``loss`` (the step's, summed over micro-batches) over ranks, stop on a non-finite
        one, then clip, step the optimiser, scheduler and weight average; returns the mean loss."""
        loss_value = torch.tensor([loss], device=self.env.device)
        if self.env.distributed:
            dist.all_reduce(loss_value)
            loss_value /= self.env.world_size
        if not torch.isfinite(loss_value).all():
            last = latest_checkpoint(self.run_dir)
            where = f"; last good checkpoint: {checkpoint_paths(self.run_dir, last)[0]}" if last is not None else ""
            raise VisionCLIPError(f"loss became {float(loss_value)} at step {self.step + 1}: training stopped{where}")
        if self.step < self.cfg.head_only_steps:  # LP-FT's first stage: AdamW skips parameters without a gradient
            for p in self.held_still:
                p.grad = None
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.trained_parameters(), self.cfg.grad_clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.step)
        self.extra["samples"] += self.cfg.global_batch * self.env.world_size
        return float(loss_value)

    # --- logging, validation, checkpoints ---------------------------------------------------
    def write_metrics(self, row: dict) -> None:
        self.metrics_file.write(json.dumps(row) + "\n")
        self.metrics_file.flush()

    def model_metadata(self) -> dict:
        cfg = self.cfg
        return {
            "config_name": Path(cfg.model).stem,
            "trained": self.step > 0,
            "initial_weights": describe_initial_weights(self.config, cfg.pretrained_towers),
            "training_data": {**self.manifest, "synthetic_images_seen": self.extra["samples"], "steps": self.step,
                              "skipped_corrupt": self.extra["skipped"]},
            "training_config": cfg.to_dict(),
            "training_command": self.config_path,
        }

    def save_model(self, path: Path, network: torch.nn.Module, dtype=None, **metadata) -> str:
        """A model file (lean unless ``full_checkpoints``); auxiliary heads are not part of it."""
        return ckpt.save_checkpoint(path, network.state_dict(), self.config, {**self.model_metadata(), **metadata},
                                    dtype=dtype, lean=not self.cfg.full_checkpoints)

    def validate(self) -> dict:
        """Validate the shipped weights; a new best on held-out synthetic data is saved as best.safetensors."""
        res = validate(self.shipped, self.config, self.step, self.cfg, self.val_set, self.env.device, self.cfg.eval_data,
                       self.train_mode if self.ema is None else self.shipped.eval)
        self.write_metrics(res)
        score = res.get("val/synthetic_balanced_accuracy")
        if score is not None and (self.extra["best"] is None or score > self.extra["best"]):
            self.extra["best"] = score
            self.save_model(self.run_dir / "best.safetensors", self.shipped, dtype=torch.float16,
                            selected_by="held-out synthetic balanced accuracy")
        log.info("validation at step %d: %s", self.step, res)
        return res

    def save(self) -> None:
        """Checkpoint this step (training state first: the model file marks a complete pair), then
        keep only the newest ``keep_last`` pairs."""
        if not self.env.is_master:
            return
        model_path, state_path = checkpoint_paths(self.run_dir, self.step)
        save_training_state(state_path, self.optimizer, self.scheduler, self.step, self.extra, self.state_modules())
        self.save_model(model_path, self.model)
        rotate_checkpoints(self.run_dir, self.cfg.keep_last)

    def after_step(self, losses: dict, window_rate: float | None) -> None:
        cfg, step = self.cfg, self.step
        master = self.env.is_master
        if master and window_rate is not None:
            self.write_metrics({"step": step, **losses, "lr": self.scheduler.get_last_lr()[0], "samples_per_s": window_rate,
                                "logit_scale": float(self.model.logit_scale.detach().exp()), "skipped": self.extra["skipped"]})
        if master and self.val_set is not None and (step % cfg.val_every == 0 or step == cfg.steps):
            self.validate()
        if step % cfg.save_every == 0 or step == cfg.steps:
            self.save()
        for callback in self.callbacks:
            callback.on_step_end(self, step)

    def finish(self) -> Path:
        final = self.run_dir / "model.safetensors"
        if self.env.is_master:
            self.metrics_file.close()
            self.save_model(final, self.shipped, dtype=torch.float16)
            _plot(self.run_dir)
        if self.env.distributed:
            dist.barrier()
        return final

    # --- the loop ------------------------------------------------------------------------------
    def run(self) -> Path:
        """Train from the current step to ``cfg.steps``; returns the final model file."""
        from tqdm import tqdm

        cfg = self.cfg
        bar = tqdm(total=cfg.steps, initial=self.step, desc="training", unit="step",
                   disable=not self.env.is_master or None, file=sys.stderr)
        micro, window_t, window_n = 0, time.time(), 0
        sums: dict[str, float] = {}
        for batch in self.loader:
            self.extra["skipped"] += batch["skipped"]
            if batch["images"] is None or len(batch["captions"]) < 2:
                continue
            last_micro = micro == cfg.accum_steps - 1
            for k, v in self.forward_backward(batch, sync=last_micro).items():
                sums[k] = sums.get(k, 0.0) + v / cfg.accum_steps
            window_n += len(batch["captions"]) * self.env.world_size
            micro += 1
            if not last_micro:
                continue
            micro = 0
            losses = {**sums, "loss": self.optimizer_step(sums["loss"])}
            sums = {}
            bar.update(1)
            rate = None
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                rate = window_n / max(1e-9, time.time() - window_t)
                bar.set_postfix(loss=f"{losses['loss']:.3f}", samples_s=f"{rate:.1f}")
                window_t, window_n = time.time(), 0
            self.after_step(losses, rate)
        bar.close()
        return self.finish()


def train(cfg: TrainConfig, run_dir: Path, env: DistEnv, resume: bool = False, config_path: str | None = None,
          callbacks=()) -> Path:
    """Run (or resume) training; returns the final model file."""
    return Trainer(cfg, run_dir, env, resume=resume, config_path=config_path, callbacks=callbacks).run()
