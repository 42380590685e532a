"""The trainer's setup: model pieces (cached text features, the step module, optimiser groups, schedule),
the network built from a config, validation, precision and the run's plot. The loop is in train.py."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import checkpoint as ckpt
from ..errors import VisionCLIPError
from ..factory import create_model, preprocess_settings
from ..model import VisionCLIP
from ..preprocess import FundusTransform
from .checkpoints import latest_checkpoint
from .data import mean_fundus_colour
from .distributed import DistEnv
from .params import TrainConfig


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
    """Forward of one training step, as a module so DDP sees (and syncs) every call."""

    def __init__(self, model, cached_text: bool):
        super().__init__()
        self.model, self.cached_text = model, cached_text

    def forward(self, images, text_input):
        image_features = F.normalize(self.model.encode_image(images), dim=-1)
        text = self.model.text.proj(text_input) if self.cached_text else self.model.encode_text(text_input)
        return image_features, F.normalize(text, dim=-1), self.model.logit_scale.exp()


def param_groups(model, cfg: TrainConfig):
    """AdamW groups: no weight decay on gains, biases and the temperature (open_clip's rule)."""
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
    return [g for g in groups if g["params"]]


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


def precision_context(cfg: TrainConfig, device: torch.device):
    p = cfg.precision
    if p == "auto":
        p = "bf16" if device.type == "cuda" else "fp32"
    if p == "fp32":
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if p == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if p == "fp16" and device.type == "cuda" else None
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


def plot_run(run_dir: Path) -> None:
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
