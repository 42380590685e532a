"""Encode the eval folders once with the default model and keep the embeddings in data/ (ignored).

    python bench/adapt_cache.py [--data ../shared/eval/eyedisease_dev ../shared/eval/palm_dev]

bench/adapt.py reads these files; the images are never encoded twice for one model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

CACHE_DIR = ROOT / "data" / "adapt_cache"
DEFAULT_FOLDERS = [ROOT.parent / "shared" / "eval" / "eyedisease_dev", ROOT.parent / "shared" / "eval" / "palm_dev"]


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", type=Path, default=DEFAULT_FOLDERS)
    args = ap.parse_args()
    from engine import VisionCLIP

    model = VisionCLIP.load()
    for folder in args.data:
        out = load_or_encode(model, folder)
        print(f"{folder.name}: {len(out['labels'])} images, {out['embeddings'].shape[1]}-d, {cache_path(folder, model.model_id)}")


if __name__ == "__main__":
    main()
