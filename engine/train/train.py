"""The training loop: contrastive pretraining with checkpoints, exact resume, validation and logs."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .. import __version__
from .. import checkpoint as ckpt
from ..errors import VisionCLIPError
from ..factory import create_model, create_tokenizer, describe_initial_weights, preprocess_settings
from ..model import VisionCLIP
from ..preprocess import FundusTransform
from .data import make_loader, mean_fundus_colour, training_preprocess
from .distributed import DistEnv
from .loss import make_loss
from .params import TrainConfig
from .style import add_mixstyle

log = logging.getLogger(__name__)
STATE_SUFFIX = ".state.safetensors"


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


# --- checkpoints -----------------------------------------------------------------------------
def checkpoint_paths(run_dir: Path, step: int) -> tuple[Path, Path]:
    base = run_dir / "checkpoints" / f"step_{step:07d}"
    return base.with_suffix(".safetensors"), Path(str(base) + STATE_SUFFIX)


def latest_checkpoint(run_dir: Path) -> int | None:
    steps = []
    for p in (run_dir / "checkpoints").glob("step_*.safetensors"):
        if p.name.endswith(STATE_SUFFIX):
            continue
        step = int(p.stem.split("_")[1])
        if checkpoint_paths(run_dir, step)[1].is_file():
            steps.append(step)
    return max(steps) if steps else None


def save_training_state(path: Path, optimizer, scheduler, step: int, extra: dict, ema=None) -> None:
    """Optimiser, scheduler, RNG and weight-average state as safetensors + JSON header: resumable
    without pickle."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    if ema is not None:
        tensors.update({f"ema/{k}": v.detach().cpu().contiguous() for k, v in ema.module.state_dict().items()})
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"opt/{idx}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}/{key}"] = value
    tensors["rng/torch"] = torch.get_rng_state()
    header = {
        "step": str(step),
        "param_groups": json.dumps(sd["param_groups"]),
        "opt_scalars": json.dumps(scalars),
        "scheduler": json.dumps(scheduler.state_dict()),
        "numpy_rng": json.dumps(np.random.get_state()[1].tolist()),
        "python_rng": json.dumps(random.getstate()[1]),
        "extra": json.dumps(extra),
    }
    ckpt.atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def load_training_state(path: Path, optimizer, scheduler, ema=None) -> tuple[int, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    tensors = load_file(str(path))
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("opt/"):
            _, idx, key = name.split("/", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in json.loads(header["opt_scalars"]).items():
        idx, key = name.split("/", 1)
        state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(header["param_groups"])})
    if ema is not None:
        averaged = {k[len("ema/"):]: v for k, v in tensors.items() if k.startswith("ema/")}
        if not averaged:
            raise VisionCLIPError(f"{path.name} holds no weight average: the run was started without ema_decay")
        ema.module.load_state_dict(averaged)
    scheduler.load_state_dict(json.loads(header["scheduler"]))
    torch.set_rng_state(tensors["rng/torch"])
    np_state = np.random.get_state()
    np.random.set_state((np_state[0], np.array(json.loads(header["numpy_rng"]), dtype=np.uint32), *np_state[2:]))
    py = random.getstate()
    random.setstate((py[0], tuple(json.loads(header["python_rng"])), py[2]))
    return int(header["step"]), json.loads(header["extra"])


# --- validation ------------------------------------------------------------------------------
def synthetic_validation_set(cfg: TrainConfig, size: int):
    """Held-out synthetic images, an equal share per condition, from seeds training never uses."""
    from ..synth.benchmark import benchmark_samples

    images, labels = zip(*benchmark_samples(cfg.val_synthetic, cfg.val_seed, size))
    return list(images), list(labels)


def validate(network, config, step: int, cfg: TrainConfig, val_set, device, eval_dirs, train_mode) -> dict:
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
    return ckpt.save_checkpoint(Path(out), model.network.state_dict(), config, meta, dtype=torch.float16)


# --- the loop --------------------------------------------------------------------------------
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
    a.set_xlabel("step"), a.set_ylabel("contrastive loss"), a.set_title("training loss")
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


def train(cfg: TrainConfig, run_dir: Path, env: DistEnv, resume: bool = False, config_path: str | None = None) -> Path:
    """Run (or resume) training; returns the final model file."""
    run_dir = Path(run_dir)
    start_step = 0
    if resume:
        start_step = latest_checkpoint(run_dir) if run_dir.is_dir() else None
        if start_step is None:
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

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model, config = create_model(cfg.model, pretrained_towers=cfg.pretrained_towers)
    if cfg.mixstyle > 0:  # training only: the hooks pass features through unchanged in eval mode
        add_mixstyle(model.visual, cfg.mixstyle_layers, cfg.mixstyle)
    if cfg.image_size:
        config["vision_cfg"]["image_size"] = cfg.image_size  # timm/resnet towers accept any size
    if cfg.local_contrast is not None:  # saved with the weights, so inference preprocesses the same way
        config.setdefault("preprocess_cfg", {})["local_contrast"] = cfg.local_contrast
    if cfg.colour_normalise != "off":  # measured on the training data, saved with the weights for inference
        _measure_colour_target(cfg, config)
    model.to(env.device)
    is_hf_text = "hf_model_name" in config["text_cfg"]
    cached_text = is_hf_text and cfg.text_unlocked_layers == 0
    if is_hf_text:
        model.lock_text_tower(unlocked_layers=cfg.text_unlocked_layers, freeze_layer_norm=True)
        for p in model.text.proj.parameters():
            p.requires_grad = True  # the projection into the shared space always learns
    if cfg.image_unlocked_groups is not None and hasattr(model, "lock_image_tower"):
        # BN statistics are handled by train_mode() below; open_clip's own BN freezing would drop
        # the activation fused into timm's BatchNormAct2d layers.
        model.lock_image_tower(unlocked_groups=cfg.image_unlocked_groups, freeze_bn_stats=False)
        for p in model.visual.head.parameters() if hasattr(model.visual, "head") else []:
            p.requires_grad = True

    trunk = getattr(model.visual, "trunk", None)
    if cfg.image_dropout is not None and hasattr(trunk, "drop_rate"):
        trunk.drop_rate = cfg.image_dropout

    def train_mode() -> None:
        model.train()
        if cfg.freeze_bn_stats:  # keep ImageNet statistics: small synthetic batches would skew them
            for m in model.visual.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    if cfg.channels_last:
        model.visual.to(memory_format=torch.channels_last)
    train_mode()

    pre = preprocess_settings(config)
    tokenizer = create_tokenizer(config)
    text_features = CachedTextFeatures(model.text, tokenizer, env.device) if cached_text else None
    step_module = ContrastiveStep(model, cached_text)
    if env.distributed:
        step_module = torch.nn.parallel.DistributedDataParallel(
            step_module, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    if cfg.compile:
        step_module = torch.compile(step_module)

    held_still = feature_parameters(model) if cfg.head_only_steps else []
    # timm's EMA, decay warmed up as 1 - (1 + step)^-3/4 so short runs average a growing window
    # (SWAD-style weight averaging for domain shift); it follows the unwrapped model.
    ema = None
    if cfg.ema_decay is not None:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True, warmup_power=3 / 4)
    shipped = ema.module if ema is not None else model  # the weights validated, kept as best and saved last

    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg))
    loss_fn = make_loss(cfg.loss, env.rank, env.world_size)
    autocast, scaler = _precision(cfg, env.device)

    extra = {"skipped": 0, "best": None, "samples": 0}
    if resume:
        model_path, state_path = checkpoint_paths(run_dir, start_step)
        state, _, _ = ckpt.load_checkpoint(model_path)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise VisionCLIPError(f"checkpoint {model_path.name} is from another architecture than config '{cfg.model}'")
        start_step, extra = load_training_state(state_path, optimizer, scheduler, ema)
        if env.is_master:
            log.info("resumed from step %d", start_step)

    loader, sources = make_loader(cfg, FundusTransform(**training_preprocess(cfg, pre)), start_step, env.rank, env.world_size)
    manifest = {
        "real_patient_images": 0,
        "sources": [s.description for s in sources],
        "generator": f"engine.synth (VisionCLIP {__version__})",
        "seed": cfg.seed,
    }
    val_set = synthetic_validation_set(cfg, pre["image_size"]) if env.is_master and cfg.val_synthetic > 0 else None
    if env.is_master:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    metrics_file = open(run_dir / "metrics.jsonl", "a") if env.is_master else None

    def model_metadata(step: int) -> dict:
        return {
            "config_name": Path(cfg.model).stem,
            "trained": step > 0,
            "initial_weights": describe_initial_weights(config, cfg.pretrained_towers),
            "training_data": {**manifest, "synthetic_images_seen": extra["samples"], "steps": step,
                              "skipped_corrupt": extra["skipped"]},
            "training_config": cfg.to_dict(),
            "training_command": config_path,
        }

    def save(step: int) -> None:
        if not env.is_master:
            return
        model_path, state_path = checkpoint_paths(run_dir, step)
        save_training_state(state_path, optimizer, scheduler, step, extra, ema)  # state first: a model file
        ckpt.save_checkpoint(model_path, model.state_dict(), config, model_metadata(step))  # marks completion
        done = sorted(p for p in (run_dir / "checkpoints").glob("step_*.safetensors") if not p.name.endswith(STATE_SUFFIX))
        for old in done[: -cfg.keep_last]:
            old.unlink(missing_ok=True)
            Path(str(old.with_suffix("")) + STATE_SUFFIX).unlink(missing_ok=True)

    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=start_step, desc="training", unit="step", disable=not env.is_master or None, file=sys.stderr)
    kill_at = int(os.environ.get("VISIONCLIP_TEST_KILL_AT_STEP", "0"))  # tests: simulate SIGKILL mid-run
    step, micro, window_t, window_n = start_step, 0, time.time(), 0
    loss_sum = 0.0
    for batch in loader:
        if batch["images"] is None or len(batch["captions"]) < 2:
            extra["skipped"] += batch["skipped"]
            continue
        extra["skipped"] += batch["skipped"]
        images = batch["images"].to(env.device, non_blocking=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        text_in = text_features(batch["captions"]) if cached_text else tokenizer(batch["captions"]).to(env.device)
        last_micro = micro == cfg.accum_steps - 1
        sync = contextlib.nullcontext() if (last_micro or not env.distributed) else step_module.no_sync()
        with sync:
            with autocast():
                img_f, txt_f, scale = step_module(images, text_in)
                if cfg.loss == "soft_labels":
                    ids = torch.tensor([label_id(k) for k in batch["keys"]], device=env.device)
                    loss = loss_fn(img_f.float(), txt_f.float(), scale.float(), ids)
                else:
                    loss = loss_fn(img_f.float(), txt_f.float(), scale.float())
            (scaler.scale(loss / cfg.accum_steps) if scaler else loss / cfg.accum_steps).backward()
        loss_sum += float(loss.detach()) / cfg.accum_steps
        window_n += len(batch["captions"]) * env.world_size
        micro += 1
        if not last_micro:
            continue
        micro = 0
        loss_value = torch.tensor([loss_sum], device=env.device)
        if env.distributed:
            dist.all_reduce(loss_value)
            loss_value /= env.world_size
        loss_sum = 0.0
        if not torch.isfinite(loss_value).all():
            last = latest_checkpoint(run_dir)
            where = f"; last good checkpoint: {checkpoint_paths(run_dir, last)[0]}" if last is not None else ""
            raise VisionCLIPError(f"loss became {float(loss_value)} at step {step + 1}: training stopped{where}")
        if step < cfg.head_only_steps:  # LP-FT's first stage: AdamW skips parameters without a gradient
            for p in held_still:
                p.grad = None
        if scaler:
            scaler.unscale_(optimizer)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        if ema is not None:
            ema.update(model, step=step)
        extra["samples"] += cfg.global_batch * env.world_size
        bar.update(1)
        if env.is_master and (step % cfg.log_every == 0 or step == cfg.steps):
            rate = window_n / max(1e-9, time.time() - window_t)
            row = {"step": step, "loss": float(loss_value), "lr": scheduler.get_last_lr()[0], "samples_per_s": rate,
                   "logit_scale": float(model.logit_scale.detach().exp()), "skipped": extra["skipped"]}
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
            bar.set_postfix(loss=f"{row['loss']:.3f}", samples_s=f"{rate:.1f}")
            window_t, window_n = time.time(), 0
        if env.is_master and val_set is not None and (step % cfg.val_every == 0 or step == cfg.steps):
            res = validate(shipped, config, step, cfg, val_set, env.device, cfg.eval_data,
                           train_mode if ema is None else shipped.eval)
            metrics_file.write(json.dumps(res) + "\n")
            metrics_file.flush()
            score = res.get("val/synthetic_balanced_accuracy")
            if score is not None and (extra["best"] is None or score > extra["best"]):
                extra["best"] = score
                ckpt.save_checkpoint(run_dir / "best.safetensors", shipped.state_dict(), config,
                                     {**model_metadata(step), "selected_by": "held-out synthetic balanced accuracy"},
                                     dtype=torch.float16)
            log.info("validation at step %d: %s", step, res)
        if step % cfg.save_every == 0 or step == cfg.steps:
            save(step)
        if kill_at and step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    bar.close()
    final = run_dir / "model.safetensors"
    if env.is_master:
        metrics_file.close()
        ckpt.save_checkpoint(final, shipped.state_dict(), config, model_metadata(step), dtype=torch.float16)
        _plot(run_dir)
    if env.distributed:
        dist.barrier()
    return final
