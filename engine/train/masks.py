"""Dense supervision from the generator's masks: an auxiliary head on an image-tower stage.

Every render carries per-finding masks (``engine.synth.render.SyntheticFundus.masks``). They are
grouped into three target channels: retinal lesions, disc findings and the cup. A small head on an
intermediate stage of the image tower predicts them (binary cross-entropy at the stage's
resolution, against area-downsampled masks), trained together with the contrastive loss, so that
the tower's features have to localise small lesions and the cup. The head is training-only: it is
kept in the run's training state (for exact resume) and never in the model file.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import VisionCLIPError
from .checkpoints import TrainingState, checkpoint_paths, complete_checkpoints

MASK_CHANNELS = ("lesion", "disc", "cup")
# The renderer marks the disc and the cup only where they are abnormal; "optic_disc"/"optic_cup"
# are taken as whole-structure masks should the renderer add them.
DISC_MASKS = frozenset({"optic_disc", "disc_oedema", "disc_pallor", "tilted_disc", "peripapillary_atrophy"})
CUP_MASKS = frozenset({"optic_cup", "enlarged_cup"})
DIFFUSE_MASKS = frozenset({"media_opacity", "tessellation"})  # the whole field of view: nothing to localise


def mask_channels(masks: dict[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """(3, H, W) uint8 in {0, 1}: the union of a render's masks per target channel."""
    out = np.zeros((len(MASK_CHANNELS), *shape), np.uint8)
    for name, m in masks.items():
        if name in DIFFUSE_MASKS:
            continue
        channel = 1 if name in DISC_MASKS else 2 if name in CUP_MASKS else 0
        out[channel] |= np.asarray(m, dtype=bool)
    return out


class MaskHead(torch.nn.Module):
    """3x3 conv + ReLU + 1x1 conv from a tapped stage's features to one logit per channel.

    ``tap(visual)`` registers a forward hook on ``visual.<layer>``; each forward of the tower then
    leaves that stage's output for ``from_tapped()``.
    """

    def __init__(self, in_channels: int, layer: str, hidden: int = 32, out_channels: int = len(MASK_CHANNELS)):
        super().__init__()
        self.layer = layer
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, hidden, 3, padding=1), torch.nn.ReLU(inplace=True),
            torch.nn.Conv2d(hidden, out_channels, 1),
        )
        self._features: torch.Tensor | None = None

    @classmethod
    def attach(cls, visual: torch.nn.Module, layer: str, image_size: int) -> "MaskHead":
        """Build a head sized for ``visual.<layer>`` and tap it (one probe forward, in eval mode)."""
        try:
            stage = visual.get_submodule(layer)
        except AttributeError:
            raise VisionCLIPError(f"config: mask_layer '{layer}' is not a layer of the image tower") from None
        seen = {}

        def record(module, inputs, output):  # a hook returning a value would replace the output
            seen["shape"] = output.shape

        handle = stage.register_forward_hook(record)
        modes = {m: m.training for m in visual.modules()}  # frozen BN layers stay in eval mode
        visual.eval()  # the probe must not move BN running statistics
        try:
            with torch.no_grad():
                visual(torch.zeros(1, 3, image_size, image_size, device=next(visual.parameters()).device))
        finally:
            handle.remove()
            for m, training in modes.items():
                m.training = training
        if len(seen.get("shape", ())) != 4:
            raise VisionCLIPError(f"config: mask_layer '{layer}' does not output a (N, C, H, W) feature map")
        head = cls(int(seen["shape"][1]), layer)
        head.tap(visual)
        return head

    def tap(self, visual: torch.nn.Module) -> None:
        def keep(module, inputs, output):
            self._features = output

        visual.get_submodule(self.layer).register_forward_hook(keep)

    def from_tapped(self) -> torch.Tensor:
        if self._features is None:
            raise RuntimeError("mask head: the image tower has not run since the head was attached")
        features, self._features = self._features, None
        return self.net(features)


def mask_loss(logits: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of (N, C, h, w) logits against (N, C, H, W) masks area-downsampled to
    (h, w) (soft targets at boundaries), over the samples flagged ``valid``."""
    target = F.adaptive_avg_pool2d(masks.float(), logits.shape[-2:])
    per_sample = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none").mean(dim=(1, 2, 3))
    if valid is None:
        return per_sample.mean()
    valid = valid.float()
    return (per_sample * valid).sum() / valid.sum().clamp(min=1.0)


# --- reading a trained head -------------------------------------------------------------------
def checkpoint_step(run_dir, step: int | None = None) -> int:
    """``step`` if the run holds a complete checkpoint pair there; with None, its newest one."""
    steps = complete_checkpoints(Path(run_dir))
    if step is None and not steps:
        raise VisionCLIPError(f"{run_dir} holds no complete checkpoint")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise VisionCLIPError(f"{run_dir} holds no checkpoint at step {step} (it has {', '.join(map(str, steps)) or 'none'})")
    return step


def load_mask_head(model, run_dir, step: int | None = None) -> MaskHead:
    """The mask head a run trained, tapped onto ``model`` (the run's model at the same step).

    The head lives only in the run's training state, so it is read from
    ``checkpoints/step_N.state.safetensors`` (the newest complete pair when ``step`` is None).
    """
    run_dir = Path(run_dir)
    step = checkpoint_step(run_dir, step)
    weights = TrainingState.read(checkpoint_paths(run_dir, step)[1]).module_state("mask_head")
    if not weights:
        raise VisionCLIPError(f"the checkpoint at step {step} holds no mask head: the run was started without mask_loss_weight")
    layer = json.loads((run_dir / "config.json").read_text()).get("mask_layer") or "trunk.blocks.4"
    head = MaskHead.attach(model.network.visual, layer, model.image_size).to(model.device)
    head.load_state_dict(weights)
    return head.eval()


@torch.inference_mode()
def predict_masks(model, head: MaskHead, images, batch_size: int = 16) -> torch.Tensor:
    """(N, 3, h, w) probabilities of the head's channels (``MASK_CHANNELS``) at its stage's resolution."""
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([model.image_tensor(im) for im in images[start:start + batch_size]]).to(model.device)
        model.network.encode_image(batch)
        out.append(torch.sigmoid(head.from_tapped().float()).cpu())
    return torch.cat(out)


def structure_scores(maps: torch.Tensor) -> dict[str, np.ndarray]:
    """Per image, from (N, 3, h, w) mask probabilities: the cup-to-disc area ratio (soft areas, so a
    disc a few cells wide still gives a graded ratio), the disc area and the lesion area, both as
    fractions of the map."""
    lesion, disc, cup = maps.flatten(2).unbind(1)  # MASK_CHANNELS order
    return {
        "cup_to_disc": (cup.sum(1) / disc.sum(1).clamp(min=1e-6)).numpy(),
        "disc_area": disc.mean(1).numpy(),
        "lesion_area": lesion.mean(1).numpy(),
    }
