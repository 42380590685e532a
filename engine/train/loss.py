"""Contrastive losses: open_clip's ClipLoss, and a label-aware variant with soft targets.

Synthetic batches hold many images of one condition; plain InfoNCE pushes apart an image and the
caption of another image with the same diagnosis. The soft-label loss (as in FLAIR) spreads the
target over every pair that shares a label.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.loss import ClipLoss


def _gather_keys(keys: torch.Tensor, world_size: int) -> torch.Tensor:
    out = [torch.zeros_like(keys) for _ in range(world_size)]
    dist.all_gather(out, keys)
    return torch.cat(out)


class SoftLabelClipLoss(ClipLoss):
    """Cross-entropy against targets that are uniform over same-label pairs (labels as int ids)."""

    def forward(self, image_features, text_features, logit_scale, label_ids: torch.Tensor, output_dict=False):
        logits_per_image, logits_per_text = self.get_logits(image_features, text_features, logit_scale)
        all_ids = _gather_keys(label_ids, self.world_size) if self.world_size > 1 else label_ids
        local_ids = label_ids if (self.world_size > 1 and self.local_loss) else all_ids
        targets = (local_ids[:, None] == all_ids[None, :]).float()
        targets = targets / targets.sum(dim=1, keepdim=True)
        loss = (
            torch.sum(-targets * F.log_softmax(logits_per_image, dim=-1), dim=-1).mean()
            + torch.sum(-targets * F.log_softmax(logits_per_text, dim=-1), dim=-1).mean()
        ) / 2
        return {"contrastive_loss": loss} if output_dict else loss


def make_loss(kind: str, rank: int, world_size: int) -> ClipLoss:
    cls = SoftLabelClipLoss if kind == "soft_labels" else ClipLoss
    # local loss + gather with gradients: each rank scores its own rows against the global batch
    return cls(local_loss=world_size > 1, gather_with_grad=world_size > 1, cache_labels=True, rank=rank, world_size=world_size)
