"""``visionclip calibrate``: fix a prompt set's screening threshold for a model on healthy renders,
and ``visionclip eval --screening``: the screening gauge on one labelled folder."""
from __future__ import annotations

import json
from pathlib import Path

from .cli_args import add_model_arguments
from .errors import VisionCLIPError
from .screening import CALIBRATION_IMAGES, CALIBRATION_SEED, CALIBRATION_SPECIFICITY


def add_arguments(p) -> None:
    p.add_argument("--prompts", default=None, help="prompt-set JSON or preset name (default: screening)")
    p.add_argument("--out", required=True, metavar="FILE.json", help="where to write the calibrated prompt set")
    p.add_argument("--specificity", type=float, default=CALIBRATION_SPECIFICITY,
                   help="share of healthy renders the threshold calls normal (default %(default)s)")
    p.add_argument("--n", type=int, default=CALIBRATION_IMAGES, help="healthy renders (default %(default)s)")
    p.add_argument("--seed", type=int, default=CALIBRATION_SEED, help="first render seed (default %(default)s)")
    add_model_arguments(p)


def run(args) -> int:
    from .cli_args import load_model
    from .prompts import load_prompt_set
    from .screening import calibrate

    if not 0 < args.specificity < 1:
        raise VisionCLIPError(f"--specificity must lie between 0 and 1, not {args.specificity}")
    if args.n < 10:
        raise VisionCLIPError(f"--n must be at least 10 healthy renders, not {args.n}")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise VisionCLIPError(f"cannot write {out}: folder {out.parent} does not exist")
    model = load_model(args)
    calibrated = calibrate(model, load_prompt_set(args.prompts), n=args.n, seed=args.seed, specificity=args.specificity)
    calibrated.save(out)
    print(f"threshold {calibrated.screening.thresholds[model.model_id]} for {model.model_id} "
          f"({calibrated.screening.calibration}); wrote {out}")
    return 0


def print_screening_gauge(model, data_dir, prompt_set, bootstrap: int, batch_size: int, as_json: bool) -> int:
    """The gauge on one folder, with the prompt set's classes all kept."""
    from .evaluate import embed_folder
    from .screening_metrics import score_folder, screening_metrics

    metrics = screening_metrics(score_folder(model, embed_folder(model, data_dir, batch_size=batch_size), prompt_set),
                                resamples=bootstrap)
    if as_json:
        print(json.dumps({"model_id": model.model_id, "prompt_set": prompt_set.name, **metrics}))
        return 0
    print(f"model {model.model_id} on {data_dir}: screening with {prompt_set.name or 'the prompt set'} "
          f"({metrics['n_healthy']} healthy, {metrics['n_diseased']} diseased)")
    ci = metrics.get("ci95", {})
    for key in [k for k in metrics if k not in ("n_healthy", "n_diseased", "ci95")]:
        interval = f"  (95% CI {ci[key][0]:.3f}-{ci[key][1]:.3f})" if key in ci else ""
        print(f"  {key:40s} {metrics[key]:.3f}{interval}")
    return 0
