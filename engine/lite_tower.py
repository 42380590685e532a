"""The default model's image tower in plain torch, for scoring without importing open_clip or timm.

``import open_clip`` (with timm, torchvision and transformers) and building the whole network took
most of the start-up of ``visionclip predict`` on one image, yet scoring with stored prompt embeddings
(engine.prompt_cache) needs only the image tower and ``logit_scale``. :class:`LiteImageNetwork` is
open_clip's ``TimmModel`` around timm's ``efficientnet_lite0`` (average pool, linear projection) as
plain modules, with the same state-dict keys (``visual.trunk.*``, ``visual.head.proj.*``,
``logit_scale``) and the same operations in the same order, so its embeddings equal the open_clip
tower's (tests/test_lite_tower.py). It only runs in eval mode: training, Grad-CAM and the text tower
use the full open_clip network, which :class:`engine.model.VisionCLIP` builds on first use.

Only configs it reproduces exactly use it (``supports``); any other image tower is built by open_clip.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# efficientnet_lite0 (timm, channel and depth multipliers 1.0): per stage, the block type, kernel,
# stride of its first block, expansion ratio, output channels and number of blocks.
EFFICIENTNET_LITE0_STAGES = (
    ("ds", 3, 1, 1, 16, 1),
    ("ir", 3, 2, 6, 24, 2),
    ("ir", 5, 2, 6, 40, 2),
    ("ir", 3, 2, 6, 80, 3),
    ("ir", 5, 1, 6, 112, 3),
    ("ir", 5, 2, 6, 192, 4),
    ("ir", 3, 1, 6, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280

# vision_cfg keys the lite tower reproduces, each with a test of its value; any other key (or value)
# means the open_clip network. Dropout and drop-path rates only act in training, which the lite tower
# never does.
_VISION_KEYS = {
    "timm_model_name": lambda v: v == "efficientnet_lite0",
    "timm_model_pretrained": lambda v: True,  # the checkpoint's weights replace whatever the trunk starts from
    "timm_pool": lambda v: v == "avg",
    "timm_proj": lambda v: v == "linear",
    "timm_proj_bias": lambda v: isinstance(v, bool),
    "timm_drop": lambda v: isinstance(v, (int, float)),
    "timm_drop_path": lambda v: v is None or isinstance(v, (int, float)),
    "patch_dropout": lambda v: v == 0,
    "image_size": lambda v: True,  # the trunk is fully convolutional; FundusTransform resizes to it
}
# top-level config keys that do not change the image tower or logit_scale
_NEUTRAL_KEYS = {"embed_dim", "vision_cfg", "text_cfg", "preprocess_cfg", "initial_weights", "custom_text",
                 "quick_gelu", "name"}


def supports(config: dict) -> bool:
    """Whether ``config``'s image tower is the one this module reproduces exactly."""
    vision = config.get("vision_cfg")
    if not isinstance(vision, dict) or not isinstance(config.get("embed_dim"), int):
        return False
    if vision.get("timm_model_name") != "efficientnet_lite0":
        return False
    if any(k not in _VISION_KEYS or not _VISION_KEYS[k](v) for k, v in vision.items()):
        return False
    extra = set(config) - _NEUTRAL_KEYS
    # init_logit_scale only sets the starting value, which the checkpoint replaces; a logit bias, other
    # dtypes or anything unknown: the open_clip network
    return extra <= {"init_logit_scale"} and config.get("init_logit_bias") is None


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's BatchNormAct2d in eval mode: batch norm, then ReLU6 or nothing (same keys)."""

    def __init__(self, channels: int, act: bool):
        super().__init__(channels)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return F.hardtanh(x, 0.0, 6.0, inplace=True) if self.act else x  # nn.ReLU6(inplace=True)


def _conv(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)


class DepthwiseSeparableConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.conv_dw = _conv(cin, cin, kernel, stride, groups=cin)
        self.bn1 = BatchNormAct2d(cin, act=True)
        self.conv_pw = _conv(cin, cout)
        self.bn2 = BatchNormAct2d(cout, act=False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return x + shortcut if self.has_skip else x


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = cin * expansion
        self.conv_pw = _conv(cin, mid)
        self.bn1 = BatchNormAct2d(mid, act=True)
        self.conv_dw = _conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = BatchNormAct2d(mid, act=True)
        self.conv_pwl = _conv(mid, cout)
        self.bn3 = BatchNormAct2d(cout, act=False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.bn1(self.conv_pw(x))
        x = self.bn2(self.conv_dw(x))
        x = self.bn3(self.conv_pwl(x))
        return x + shortcut if self.has_skip else x


class EfficientNetLite0(nn.Module):
    """timm's efficientnet_lite0 trunk without its classifier, pooled and flattened."""

    def __init__(self):
        super().__init__()
        self.conv_stem = _conv(3, STEM_CHANNELS, 3, 2)
        self.bn1 = BatchNormAct2d(STEM_CHANNELS, act=True)
        stages, cin = [], STEM_CHANNELS
        for kind, kernel, stride, expansion, cout, repeats in EFFICIENTNET_LITE0_STAGES:
            blocks = []
            for i in range(repeats):
                s = stride if i == 0 else 1
                blocks.append(DepthwiseSeparableConv(cin, cout, kernel, s) if kind == "ds"
                              else InvertedResidual(cin, cout, kernel, s, expansion))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = _conv(cin, HEAD_CHANNELS)
        self.bn2 = BatchNormAct2d(HEAD_CHANNELS, act=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv_stem(x))
        x = self.blocks(x)
        return self.forward_head(self.bn2(self.conv_head(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # SelectAdaptivePool2d('avg', flatten=True)


class LiteVisual(nn.Module):
    """open_clip's TimmModel: trunk, then ``head.proj`` (dropout is the identity in eval mode)."""

    def __init__(self, embed_dim: int, proj_bias: bool = False):
        super().__init__()
        self.trunk = EfficientNetLite0()
        self.head = nn.Sequential()
        self.head.add_module("proj", nn.Linear(HEAD_CHANNELS, embed_dim, bias=proj_bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.proj(self.trunk(x))


class LiteImageNetwork(nn.Module):
    """The image half of the default network: ``visual`` and ``logit_scale``, keyed as in open_clip's."""

    def __init__(self, config: dict):
        super().__init__()
        if not supports(config):
            raise ValueError("the lite image tower does not reproduce this config's image tower")
        self.visual = LiteVisual(config["embed_dim"], bool(config["vision_cfg"].get("timm_proj_bias", False)))
        self.logit_scale = nn.Parameter(torch.zeros([]))
        self.eval()

    def train(self, mode: bool = True) -> "LiteImageNetwork":
        if mode:
            raise RuntimeError("the lite image tower is for inference only; train the full network (VisionCLIP.network)")
        return super().train(False)

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.visual(image)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encode_image(image)
