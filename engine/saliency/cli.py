"""`visionclip explain` sub-command: Grad-CAM saliency of one class for one photograph."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..cli_args import add_model_arguments
from ..errors import VisionCLIPError
from .explain import DEFAULT_METHOD, METHODS, TARGETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="fundus photograph")
    parser.add_argument("--class", dest="class_name", required=True, metavar="NAME", help="class of the prompt set to explain")
    parser.add_argument("--prompts", default=None, metavar="FILE", help="prompt set JSON or preset name (default: screening)")
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=list(METHODS),
                        help=f"CAM method (default {DEFAULT_METHOD}: stride-4 detail gated by the last stage; gradcam: the "
                             "last stage alone, the earlier default; scorecam is slow on CPU)")
    parser.add_argument("--target", default=None, choices=list(TARGETS),
                        help="explain the class's softmax probability against the other classes (default; "
                             "similarity for a one-class prompt set) or its cosine similarity")
    parser.add_argument("--layers", default=None, metavar="NAMES",
                        help="target layers inside the image tower, comma-separated, e.g. trunk.blocks.5, or 'detail' for the "
                             "stride-4 stage (lesion-level; use with --method gradcam-elementwise) (default: the method's; "
                             "multiscale: the stride-4 and last stages; others: the last stage)")
    parser.add_argument("--eye", default=None, choices=["right", "left"],
                        help="the eye's side, for nasal/temporal in the 'where' line (default: inferred from the disc)")
    parser.add_argument("--opacity", type=float, default=0.5, help="heat-map opacity in the overlay, 0..1 (default 0.5)")
    parser.add_argument("--out", default=None, metavar="FILE.png", help="overlay to write (default: IMAGE_saliency.png in the current folder)")
    add_model_arguments(parser)
    parser.add_argument("--adapter", default=None, metavar="FILE.safetensors",
                        help="explain the class's probability under this few-shot adapter (its own prompt set)")

def run(args) -> int:
    from ..model import VisionCLIP
    from ..prompts import load_prompt_set
    from .explain import explain
    from .where import describe_map

    prompt_set = load_prompt_set(getattr(args, "prompts", None))
    out = Path(args.out) if args.out else Path(f"{Path(args.image).stem}_saliency.png")
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"):
        raise VisionCLIPError(f"--out must be an image file name such as overlay.png, not {out.name}")
    if out.parent and not out.parent.exists():
        raise VisionCLIPError(f"output folder {out.parent} does not exist")
    model = VisionCLIP.load(args.model, device=args.device, trust_pickle=args.trust_pickle)
    from ..adapt.cli import load_adapter

    result = explain(model, args.image, prompt_set, args.class_name, method=args.method, target=args.target,
                     opacity=args.opacity, layers=args.layers, adapter=load_adapter(args, model))
    result.overlay.save(out)
    note = "" if model.is_trained else " (untrained model: the map is not meaningful)"
    print(f"{result.method} saliency ({result.target}) of '{result.class_name}' written to {out}")
    print(f"P({result.class_name}) = {result.probability:.3f}{note}")
    if result.map.max() > 0:
        from ..preprocess import load_image_with_meta

        image, meta = load_image_with_meta(args.image)  # a DICOM file may state the eye's side
        print(describe_map(result.map, image, args.eye or meta.get("laterality")).text)
    return 0
