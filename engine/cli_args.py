"""Argument groups shared by the ``visionclip`` subcommands."""
import argparse


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="checkpoint (.safetensors) or folder; default: $VISIONCLIP_MODEL, else the shipped model")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--trust-pickle", action="store_true", help="allow a .pt/.pth checkpoint (it can run code)")
