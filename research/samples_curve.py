"""Real accuracy against samples seen: does more training on the renders pay? (issue 25, lever 4)

Reads the metrics of training runs (a run folder's metrics.jsonl and config.json, or a shipped
model's training_metrics.jsonl with its training_config.json) and prints, for every validation, the
samples seen (step x batch x accumulation) beside the held-out synthetic score and each real folder
scored with --eval-data. Real folders are measured only: the run never chose anything by them.

Usage: python -m research.samples_curve [LABEL=]RUN [...] [--png research/samples_curve.png]
  e.g. python -m research.samples_curve shipped=assets/model v2-appearance=runs/v2-appearance
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def load_run(folder: Path, name: str | None = None) -> tuple[str, list[dict]]:
    """(name, rows) for a run folder or a shipped model folder; rows hold samples and metrics."""
    metrics = next((folder / n for n in ("metrics.jsonl", "training_metrics.jsonl") if (folder / n).exists()), None)
    config = next((folder / n for n in ("config.json", "training_config.json") if (folder / n).exists()), None)
    if metrics is None or config is None:
        raise SystemExit(f"samples_curve: {folder} has no metrics.jsonl/config.json (or training_* files)")
    cfg = json.loads(config.read_text())
    per_step = int(cfg.get("batch_size", 1)) * int(cfg.get("accum_steps", 1) or 1)
    rows = []
    for line in metrics.read_text().splitlines():
        d = json.loads(line)
        if any(k.startswith(("val/", "eval/")) for k in d):
            rows.append({"samples": d["step"] * per_step, **{k: v for k, v in d.items() if k != "step"}})
    return name or folder.name, rows


COLUMNS = [("val/synthetic_balanced_accuracy", "synthetic BA"),
           ("eval/eyedisease_dev/balanced_accuracy", "eyedisease_dev BA"),
           ("eval/palm_dev/mean_auc", "palm_dev AUC")]


def table(runs: list[tuple[str, list[dict]]]) -> str:
    out = ["| run | samples seen | " + " | ".join(c[1] for c in COLUMNS) + " |",
           "|---|---:|" + "---:|" * len(COLUMNS)]
    for name, rows in runs:
        for r in rows:
            cells = [f"{r[k]:.3f}" if k in r else "-" for k, _ in COLUMNS]
            out.append(f"| {name} | {r['samples']:,} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(runs, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(4 * len(COLUMNS), 3.2))
    for ax, (key, label) in zip(axes, COLUMNS):
        for i, (name, rows) in enumerate(runs):
            pts = [(r["samples"], r[key]) for r in rows if key in r]
            if pts:  # one colour per run in every panel, even where a run has no points
                ax.plot(*zip(*pts), marker="o", label=name, color=f"C{i}")
        ax.set_title(label)
        ax.set_xlabel("samples seen")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="[LABEL=]folder")
    ap.add_argument("--png", type=Path)
    args = ap.parse_args(argv)
    runs = [load_run(Path(r.split("=", 1)[-1]), r.split("=", 1)[0] if "=" in r else None) for r in args.runs]
    print(table(runs))
    if args.png:
        plot(runs, args.png)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
