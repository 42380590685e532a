"""`visionclip adapt`: fit a few-shot adapter on a labelled folder, and the ``--adapter`` option that
predict, eval and explain share.

The app's reviewed cases are another source of labelled examples, read by the app, which owns their storage:
``python -m visionclip_app adapt --cases DB`` builds on :func:`add_arguments` and :func:`run` here, handing over
images and labels (``run(args, read_examples)``)."""
from __future__ import annotations

import argparse
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np

from ..cli_args import add_model_arguments, load_model
from ..errors import VisionCLIPError
from .file import DEFAULT_METHOD, METHODS, Adapter, default_method, encode_for


def load_adapter(args, model):
    """The adapter named by ``--adapter`` checked against the loaded model, or None."""
    path = getattr(args, "adapter", None)
    if not path:
        return None
    if getattr(args, "prompts", None):
        raise VisionCLIPError("--prompts and --adapter cannot be combined: the adapter carries its own prompt set")
    return Adapter.load(path, model)


APP_ADAPT_COMMAND = "python -m visionclip_app adapt"  # the app's command for its case log (--cases)


def add_arguments(parser: argparse.ArgumentParser, case_log_option: bool = True):
    """The options of `adapt`; returns the required group of example sources (--data, ...) for a caller to extend.

    ``case_log_option``: also accept --cases and --reviewer, only to say which command reads the case log."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="DIR", help="labelled folder (DIR/labels.csv with path,label)")
    if case_log_option:
        src.add_argument("--cases", metavar="DB", help=f"the app's case log: use `{APP_ADAPT_COMMAND} --cases DB ...`")
        parser.add_argument("--reviewer", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--shots", type=int, default=None, metavar="K", help="use at most K images per class (drawn at random)")
    parser.add_argument("--seed", type=int, default=0, help="random draw for --shots (default 0)")
    parser.add_argument("--prompts", default=None, help="prompt-set JSON or preset name (default: screening)")
    parser.add_argument("--all-classes", action="store_true",
                        help="keep the prompt set's classes that have no example (an error: each class needs one)")
    parser.add_argument("--method", default=None, choices=list(METHODS),
                        help="adapter (default clap-stage where the image tower has the stage it reads, else "
                             f"{DEFAULT_METHOD}: text-initialised, anchored to the text, no validation set)")
    parser.add_argument("--out", required=True, metavar="FILE.safetensors", help="adapter file to write")
    add_model_arguments(parser)
    return src


def folder_hash(items: list[tuple[Path, str]]) -> str:
    """SHA-256 over each image's bytes and label, in path order: which folder an adapter came from."""
    h = hashlib.sha256()
    for path, label in sorted(items, key=lambda it: str(it[0])):
        h.update(path.name.encode() + b"\0" + label.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def read_folder_examples(args):
    """(images, labels, provenance, note) from --data: a labelled folder."""
    from ..evaluate import read_labels

    items = read_labels(args.data)
    return [p for p, _ in items], [lab for _, lab in items], {"source": "folder", "folder_sha256": folder_hash(items),
                                                               "folder_name": Path(args.data).name}, ""


def thumbnail_note(images) -> str:
    """What a CLI prints about examples that are stored thumbnails rather than the original photographs."""
    sizes = Counter(max(im.size) for im in images)
    return (f"images: the case log's thumbnails ({', '.join(f'{n} at {s} px' for s, n in sorted(sizes.items()))} "
            "on the long side; the originals are not stored), resized to the model input")


def _draw(labels: list[str], shots: int, seed: int) -> list[int]:
    if shots < 1:
        raise VisionCLIPError("--shots must be 1 or more")
    rng = np.random.default_rng(seed)
    keep = []
    for cls in dict.fromkeys(labels):
        idx = [i for i, lab in enumerate(labels) if lab == cls]
        keep += sorted(rng.choice(idx, size=min(shots, len(idx)), replace=False).tolist())
    return sorted(keep)


def run(args, read_examples=None) -> int:
    """Fit and save an adapter. ``read_examples(args)`` gives (images, labels, provenance, note) when the
    examples come from elsewhere than --data; provenance "case_ids", if given, follows the --shots draw."""
    from ..evaluate import match_labels
    from ..prompts import load_prompt_set

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise VisionCLIPError(f"--out must end in .safetensors, not {out.name}")
    if getattr(args, "reviewer", None) and not getattr(args, "cases", None):
        raise VisionCLIPError("--reviewer goes with --cases")
    if getattr(args, "cases", None) and read_examples is None:
        raise VisionCLIPError(f"--cases: the case log belongs to the app; run `{APP_ADAPT_COMMAND} --cases "
                              f"{args.cases} ...` with the same options")
    prompt_set = load_prompt_set(args.prompts)
    images, labels, provenance, note = (read_examples or read_folder_examples)(args)
    labels, prompt_set = match_labels(labels, prompt_set, args.all_classes)  # before any image is encoded
    if args.shots:
        keep = _draw(labels, args.shots, args.seed)
        images, labels = [images[i] for i in keep], [labels[i] for i in keep]
        prompt_set = prompt_set if args.all_classes else prompt_set.subset(set(labels))
        provenance.update(shots=args.shots, seed=args.seed)
        if "case_ids" in provenance:
            provenance["case_ids"] = [provenance["case_ids"][i] for i in keep]
    model = load_model(args)
    method = args.method or default_method(model)
    embeddings = encode_for(model, images, method)
    adapter = Adapter.fit(model, embeddings, labels, prompt_set, method=method, provenance=provenance)
    adapter.save(out)
    counts = ", ".join(f"{c} {n}" for c, n in adapter.images_per_class.items())
    print(f"{adapter.method} adapter for model {model.model_id} written to {out}")
    print(f"  fitted on {len(labels)} real images: {counts}")
    if note:
        print(f"  {note}")
    print("  the base model is unchanged; the adapter applies to this model and these classes only (--adapter FILE)")
    return 0


def _image_files(args) -> list[str]:
    """The files named on the command line, folders expanded as plain `predict` does."""
    from ..batch import expand_inputs

    return [str(p) for p in expand_inputs(args.images, recursive=getattr(args, "recursive", False)).files]


def cmd_predict_adapted(args, prompt_set, model) -> int:
    """`visionclip predict` with --adapter: each image encoded with the features the adapter reads, then
    scored by the adapter."""
    import json

    import torch

    from .scoring import class_probabilities

    adapter = load_adapter(args, model)
    prompt_set = adapter.prompt_set if adapter else prompt_set
    results, embeddings = [], []
    for path in _image_files(args):  # one at a time: a bad file names itself and the rest still run
        try:
            embeddings.append(adapter.encode(model, [path]) if adapter else model.encode_images([path]))
            results.append({"image": path})
        except VisionCLIPError as e:
            results.append({"image": path, "error": str(e)})
    ok = [r for r in results if "error" not in r]
    if ok:
        probs = class_probabilities(model, torch.cat(embeddings), prompt_set, adapter)
        for r, row in zip(ok, probs):
            r["probabilities"] = dict(zip(prompt_set.classes, map(float, row)))
            r["predicted"] = max(r["probabilities"], key=r["probabilities"].get)
    scoring = f"{adapter.method} adapter {Path(args.adapter).name}" if adapter else "zero-shot"
    if args.json:
        extra = {"adapter": adapter.describe()} if adapter else {}
        print(json.dumps({"model_id": model.model_id, **extra, "results": results}, indent=2))
    else:
        print(f"# {scoring}")
        for r in results:
            if "error" in r:
                print(f"{r['image']}: error: {r['error']}")
                continue
            ranked = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[: args.top]
            print(f"{r['image']}: " + ", ".join(f"{c} {p:.3f}" for c, p in ranked))
    return 0 if ok and len(ok) == len(results) else 2
