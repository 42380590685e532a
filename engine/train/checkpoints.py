"""A run folder's checkpoints: model file + training state per step, rotation, and resume.

Each saved step is a pair: ``step_N.safetensors`` (the model, loadable by ``VisionCLIP.load``) and
``step_N.state.safetensors`` (optimiser, scheduler, RNGs, weight average, auxiliary heads). The state
is written first and the model file last, so a model file marks a complete pair. Nothing is pickled.
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .. import checkpoint as ckpt
from ..errors import VisionCLIPError

log = logging.getLogger(__name__)
STATE_SUFFIX = ".state.safetensors"
CORRUPT_SUFFIX = ".corrupt"
# training-state prefixes: what they hold and the setting that adds them
STATE_MODULES = {"ema": ("weight average", "ema_decay")}


def checkpoint_paths(run_dir: Path, step: int) -> tuple[Path, Path]:
    base = Path(run_dir) / "checkpoints" / f"step_{step:07d}"
    return base.with_suffix(".safetensors"), Path(str(base) + STATE_SUFFIX)


def complete_checkpoints(run_dir: Path) -> list[int]:
    """Steps with both files present, oldest first."""
    steps = []
    for p in (Path(run_dir) / "checkpoints").glob("step_*.safetensors"):
        if p.name.endswith(STATE_SUFFIX):
            continue
        step = int(p.stem.split("_")[1])
        if checkpoint_paths(run_dir, step)[1].is_file():
            steps.append(step)
    return sorted(steps)


def latest_checkpoint(run_dir: Path) -> int | None:
    steps = complete_checkpoints(run_dir)
    return steps[-1] if steps else None


def rotate_checkpoints(run_dir: Path, keep_last: int) -> list[int]:
    """Delete all but the newest ``keep_last`` complete pairs; returns the steps deleted."""
    old = complete_checkpoints(run_dir)[:-keep_last]
    for step in old:
        for p in checkpoint_paths(run_dir, step):
            p.unlink(missing_ok=True)
    return old


# --- training state ----------------------------------------------------------------------------
def save_training_state(path: Path, optimizer, scheduler, step: int, extra: dict, modules: dict | None = None) -> None:
    """Optimiser, scheduler and RNG state, plus the weights of ``modules`` ({prefix: nn.Module}: the
    weight average) as safetensors + JSON header: resumable without pickle."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for prefix, module in (modules or {}).items():
        tensors.update({f"{prefix}/{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
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


@dataclass
class TrainingState:
    """A state file read into memory (nothing applied yet)."""

    step: int
    header: dict
    tensors: dict

    @classmethod
    def read(cls, path: Path) -> "TrainingState":
        ckpt.check_header_size(path)
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
            tensors = load_file(str(path))
            return cls(int(header["step"]), header, tensors)
        except (SafetensorError, OSError, ValueError, KeyError) as e:
            raise VisionCLIPError(f"{path.name} is not a readable training state ({str(e).splitlines()[0][:80]})") from None

    def module_state(self, prefix: str) -> dict:
        return {k[len(prefix) + 1:]: v for k, v in self.tensors.items() if k.startswith(prefix + "/")}

    def apply(self, optimizer, scheduler, modules: dict | None = None) -> dict:
        """Restore optimiser, scheduler, RNGs and ``modules``; returns the run's ``extra`` record."""
        state: dict[int, dict] = {}
        for name, value in self.tensors.items():
            if name.startswith("opt/"):
                _, idx, key = name.split("/", 2)
                state.setdefault(int(idx), {})[key] = value
        for name, value in json.loads(self.header["opt_scalars"]).items():
            idx, key = name.split("/", 1)
            state.setdefault(int(idx), {})[key] = value
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(self.header["param_groups"])})
        for prefix, module in (modules or {}).items():
            weights = self.module_state(prefix)
            if not weights:
                what, setting = STATE_MODULES.get(prefix, (prefix, prefix))
                raise VisionCLIPError(f"the checkpoint at step {self.step} holds no {what}: "
                                      f"the run was started without {setting}")
            module.load_state_dict(weights)
        scheduler.load_state_dict(json.loads(self.header["scheduler"]))
        torch.set_rng_state(self.tensors["rng/torch"])
        np_state = np.random.get_state()
        np.random.set_state((np_state[0], np.array(json.loads(self.header["numpy_rng"]), dtype=np.uint32), *np_state[2:]))
        py = random.getstate()
        random.setstate((py[0], tuple(json.loads(self.header["python_rng"])), py[2]))
        return json.loads(self.header["extra"])


def read_latest_readable(run_dir: Path) -> tuple[int, dict, TrainingState]:
    """The newest complete checkpoint pair that reads whole: (step, model state dict, training state).

    A pair that does not read (a truncated or corrupted file) is renamed ``*.corrupt`` with a
    one-line warning, kept for inspection, and the previous pair is used.
    """
    steps = complete_checkpoints(run_dir)
    if not steps:
        raise VisionCLIPError(f"nothing to resume: {run_dir} holds no complete checkpoint")
    for step in reversed(steps):
        model_path, state_path = checkpoint_paths(run_dir, step)
        try:
            weights, _, _ = ckpt.load_checkpoint(model_path)
            state = TrainingState.read(state_path)
            return step, weights, state
        except VisionCLIPError as e:
            for p in (model_path, state_path):
                if p.exists():
                    p.rename(p.with_name(p.name + CORRUPT_SUFFIX))
            log.warning("checkpoint at step %d is unreadable (%s): kept as *%s, trying the previous one", step, e, CORRUPT_SUFFIX)
    raise VisionCLIPError(f"nothing to resume: no checkpoint in {run_dir / 'checkpoints'} reads whole "
                          f"(the unreadable ones were renamed *{CORRUPT_SUFFIX})")
