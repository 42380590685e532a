"""Argument groups and the model loader shared by the ``visionclip`` subcommands."""
import argparse


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint (.safetensors) or folder; default: $VISIONCLIP_MODEL, else the shipped model")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--trust-pickle", action="store_true", help="allow a .pt/.pth checkpoint (it can run code)")


def add_adapter_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adapter", default=None, metavar="FILE.safetensors",
                   help="a few-shot adapter from `visionclip adapt` (it carries its own prompt set)")


def load_model(args):
    """The model named by the model arguments (``add_model_arguments``)."""
    from .memory import keep_freed_memory
    from .model import VisionCLIP

    model = VisionCLIP.load(args.model, device=args.device, trust_pickle=args.trust_pickle)
    model.image_runtime = getattr(args, "runtime", "eager")  # predict/eval --runtime (engine.image_runtime)
    if model.device.type == "cpu":
        keep_freed_memory()  # batches of images otherwise fault their activation buffers in again
    return model
