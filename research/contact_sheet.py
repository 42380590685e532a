"""Contact sheet of real evaluation photographs of one label, for looking at the data by eye.

    python -m research.contact_sheet --data ../shared/eval/eyedisease_dev --label "diabetic retinopathy" \
        --n 36 --seed 2024 --size 400 --out dr_sheet.png

Draws ``n`` photographs of ``label`` at random (Python's ``random.Random(seed).sample`` over the
rows of labels.csv in file order), prints their paths in sheet order (left to right, top to bottom)
and writes sheets of 3 x 3 at ``size`` px each (``_1``, ``_2``, ... before the suffix). The model
card's audit of DR-labelled photographs was made with the command above.
"""
from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

from PIL import Image


from engine.evaluate import read_labels
from engine.preprocess import load_image


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder with labels.csv (path,label)")
    p.add_argument("--label", required=True)
    p.add_argument("--n", type=int, default=36)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--size", type=int, default=400, help="side of each photograph on the sheet (px)")
    p.add_argument("--per-sheet", type=int, default=9)
    p.add_argument("--out", default="contact_sheet.png")
    args = p.parse_args(argv)

    rows = [path for path, label in read_labels(args.data) if label == args.label]
    if not rows:
        p.error(f"no photograph labelled {args.label!r} in {args.data}")
    chosen = random.Random(args.seed).sample(rows, min(args.n, len(rows)))
    side = math.ceil(math.sqrt(args.per_sheet))
    out = Path(args.out)
    for k in range(0, len(chosen), args.per_sheet):
        sheet = Image.new("RGB", (side * args.size, side * args.size))
        for i, path in enumerate(chosen[k:k + args.per_sheet]):
            im = load_image(path).resize((args.size, args.size))
            sheet.paste(im, ((i % side) * args.size, (i // side) * args.size))
            print(f"sheet {k // args.per_sheet + 1} #{i + 1}: {path}")
        name = out.with_name(f"{out.stem}_{k // args.per_sheet + 1}{out.suffix}")
        sheet.save(name)
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
