"""research/reduced_precision.py: each 16-bit variant runs in 16 bits and embeds like the float32 tower."""
from pathlib import Path

import torch

from research import reduced_precision

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "assets" / "examples").glob("*.png"))[:3]


def test_variants_embed_like_float32_and_the_16_bit_ones_differ(default_model):
    images = torch.stack([default_model.transform(p) for p in EXAMPLES]).contiguous(memory_format=torch.channels_last)
    towers = reduced_precision.variants(default_model)
    assert list(towers)[0] == "float32, eager"
    reference = reduced_precision.embeddings(default_model, images, towers["float32, eager"])
    assert reference.dtype == torch.float32 and torch.allclose(reference.norm(dim=-1), torch.ones(len(EXAMPLES)))
    for name, variant in list(towers.items())[1:]:
        emb = reduced_precision.embeddings(default_model, images, variant)
        cosine = (reference * emb).sum(-1)
        assert emb.shape == reference.shape and (cosine > 0.99).all(), name
        if "16" in name:
            assert not torch.equal(emb, reference), f"{name} ran in float32"


def test_the_half_frozen_tower_takes_and_computes_in_float16(default_model):
    tower = reduced_precision.half_frozen_tower(default_model)
    x = torch.zeros(2, 3, default_model.image_size, default_model.image_size, dtype=torch.float16)
    assert tower(x.contiguous(memory_format=torch.channels_last)).dtype == torch.float16
