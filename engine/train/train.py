"""The training loop: contrastive pretraining with checkpoints, exact resume, validation and logs.

The pieces the loop is set up from (the network, validation, optimiser groups, precision) are in setup.py."""
from __future__ import annotations

import contextlib
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

from .. import __version__
from .. import checkpoint as ckpt
from ..errors import VisionCLIPError
from ..factory import create_tokenizer, describe_initial_weights, preprocess_settings
from ..preprocess import FundusTransform
from .checkpoints import (checkpoint_paths, latest_checkpoint, read_latest_readable, rotate_checkpoints,
                          save_training_state)
from .data import make_loader, training_preprocess
from .distributed import DistEnv
from .loss import make_loss
from .params import TrainConfig
from .setup import (CachedTextFeatures, ContrastiveStep, build_model, label_id, param_groups, plot_run,
                    precision_context, prepare_run_dir, set_train_mode, synthetic_validation_set, validate,
                    warmup_cosine)
from .setup import set_colour_target  # noqa: F401  (public here too: the model card names it)

log = logging.getLogger(__name__)


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
        self.step_module = self._wrap(ContrastiveStep(self.model, self.cached_text))
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(cfg))
        self.loss_fn = make_loss(cfg.loss, env.rank, env.world_size)
        self.autocast, self.scaler = precision_context(cfg, env.device)
        self.step, self.extra = 0, {"skipped": 0, "best": None, "samples": 0}
        if resume:
            self.resume()
        self.loader, sources = make_loader(cfg, FundusTransform(**training_preprocess(cfg, self.pre)), self.step,
                                           env.rank, env.world_size)
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
        its losses: ``loss`` (what is optimised)."""
        cfg, device = self.cfg, self.env.device
        images = batch["images"].to(device, non_blocking=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        text_in = self.text_features(batch["captions"]) if self.cached_text else self.tokenizer(batch["captions"]).to(device)
        no_sync = contextlib.nullcontext() if (sync or not self.env.distributed) else self.step_module.no_sync()
        with no_sync:
            with self.autocast():
                img_f, txt_f, scale = self.step_module(images, text_in)
                if cfg.loss == "soft_labels":
                    ids = torch.tensor([label_id(k) for k in batch["keys"]], device=device)
                    loss = self.loss_fn(img_f.float(), txt_f.float(), scale.float(), ids)
                else:
                    loss = self.loss_fn(img_f.float(), txt_f.float(), scale.float())
            (self.scaler.scale(loss / cfg.accum_steps) if self.scaler else loss / cfg.accum_steps).backward()
        return {"loss": float(loss.detach())}

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
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
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
        """A model file (lean unless ``full_checkpoints``)."""
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
            plot_run(self.run_dir)
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
