"""Encode the eval folders once with the default model and keep the embeddings in data/ (ignored).

    python -m bench.adapt_cache [--data ../shared/eval/eyedisease_dev ../shared/eval/palm_dev]

bench/adapt.py reads these files; the images are never encoded twice for one model. With ``--trunk``,
also the image tower's pooled features before the projection head (``trunk``, 1280-d for
EfficientNet-Lite0) and of two intermediate stages (``stage4``, ``stage5``), for ``bench/adapt.py
--features``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.common import EVAL_ROOT, REPO

CACHE_DIR = REPO / "data" / "adapt_cache"
DEFAULT_FOLDERS = [EVAL_ROOT / "eyedisease_dev", EVAL_ROOT / "palm_dev"]


def cache_path(folder: Path, model_id: str) -> Path:
    return CACHE_DIR / f"{Path(folder).name}_{model_id}.npz"


def load_or_encode(model, folder: Path) -> dict:
    """{"embeddings": (N, D) float32, "labels": [...], "paths": [...]} for one labelled folder."""
    from engine.evaluate import embed_folder
    from engine.memory import keep_freed_memory

    path = cache_path(folder, model.model_id)
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        return {"embeddings": z["embeddings"], "labels": list(z["labels"]), "paths": list(z["paths"])}
    if model.device.type == "cpu":
        keep_freed_memory()
    emb = embed_folder(model, folder, batch_size=32)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    paths = [str(p.relative_to(folder)) for p in emb.paths]
    np.savez(path, embeddings=emb.embeddings.numpy().astype(np.float32), labels=np.array(emb.labels), paths=np.array(paths))
    return {"embeddings": emb.embeddings.numpy(), "labels": emb.labels, "paths": paths}


def trunk_cache_path(folder: Path, model_id: str) -> Path:
    return CACHE_DIR / f"{Path(folder).name}_{model_id}_trunk.npz"


STAGES = {"stage4": 4, "stage5": 5}  # indices into an EfficientNet trunk's ``blocks``


def load_or_encode_trunk(model, folder: Path, batch_size: int = 32) -> dict:
    """{"embeddings", "trunk", "stage4", "stage5": (N, d) float32, "labels", "paths"}: one pass per image;
    the intermediate stages are average-pooled block outputs (hooks), the trunk its pooled output."""
    import torch
    import torch.nn.functional as F

    from engine.evaluate import read_labels

    path = trunk_cache_path(folder, model.model_id)
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        return {k: (list(z[k]) if k in ("labels", "paths") else z[k]) for k in z.files}
    items = read_labels(folder)
    visual = model.network.visual
    pooled: dict[str, list] = {k: [] for k in ("embeddings", "trunk", *STAGES)}
    hooks = [visual.trunk.blocks[i].register_forward_hook(
        lambda _m, _i, out, name=name: pooled[name].append(out.float().mean((2, 3)).cpu())) for name, i in STAGES.items()]
    try:
        with torch.inference_mode():
            for start in range(0, len(items), batch_size):
                batch = torch.stack([model.image_tensor(p) for p, _ in items[start:start + batch_size]]).to(model.device)
                trunk = visual.trunk(batch)
                pooled["trunk"].append(trunk.float().cpu())
                pooled["embeddings"].append(F.normalize(visual.head(trunk).float(), dim=-1).cpu())
                print(f"{folder.name}: {min(start + batch_size, len(items))}/{len(items)}", flush=True)
    finally:
        for h in hooks:
            h.remove()
    out = {k: torch.cat(v).numpy().astype(np.float32) for k, v in pooled.items()}
    out["labels"] = [label for _, label in items]
    out["paths"] = [str(p.relative_to(folder)) for p, _ in items]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: np.array(v) for k, v in out.items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", type=Path, default=DEFAULT_FOLDERS)
    ap.add_argument("--trunk", action="store_true", help="also cache the pre-projection (trunk) features")
    args = ap.parse_args()
    from engine import VisionCLIP

    model = VisionCLIP.load()
    for folder in args.data:
        if args.trunk:
            out = load_or_encode_trunk(model, folder)
            print(f"{folder.name}: trunk {out['trunk'].shape}, {trunk_cache_path(folder, model.model_id)}")
            continue
        out = load_or_encode(model, folder)
        print(f"{folder.name}: {len(out['labels'])} images, {out['embeddings'].shape[1]}-d, {cache_path(folder, model.model_id)}")


if __name__ == "__main__":
    main()
