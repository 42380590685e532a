"""Training throughput and peak memory: our loop against open_clip's own training entry.

    python -m bench.train [--models effl0,rn50[,vitb16]] [--batch-size 32] [--warmup 1] [--steps 3] [--allocator]

For each model, runs (each in a fresh subprocess, a few steps only):

* ours: ``python -m engine.train.main`` on a temporary YAML config. Data: a small pre-rendered
  SynFundus-layout folder (``visionclip synth --n 64 --size 256``, cached under the temp dir) with
  ``captions: labels``; augmentation on, 224 px, ``val_synthetic: 0`` (no validation), loss ``clip``.
* with ``--allocator``, ours once more with glibc's default malloc settings, to measure what keeping
  freed memory in the heap (``engine.memory``, on by default on CPU) gains.
* open_clip: ``open_clip_train.main.main([...])`` with ``--dataset-type synthetic`` (one black
  image, a constant caption, open_clip's train transform) on the same model, batch size, image
  size, precision and freezing. Our JSON model config is registered with
  ``open_clip.add_model_config`` after dropping our own keys and resolving ``package:`` paths.

Freezing: effl0 follows configs/visionclip-default.yaml (image tower: last 6 groups + head train;
MiniLM text tower frozen, its projection trains) -> open_clip ``--lock-image
--lock-image-unlocked-groups 6 --lock-text``. Our loop caches the frozen text tower's features
per distinct caption, so a step runs no text transformer once the captions have been seen; that is
a main reason it should be faster. rn50 / vitb16 are trained from scratch with both towers
unlocked in both loops (our loop only freezes Hugging Face text towers).

samples/s: per-step timings after the warm-up steps (ours: metrics.jsonl with log_every 1, a
window that includes waiting for the data loader; open_clip: its "Batch (t)" log lines, which also
include data time), combined as total samples / total time. Peak RSS: ru_maxrss of the training
subprocess from os.wait4 (the largest single process of its tree: the main training process).
On a GPU (torch.cuda.is_available()) both loops run on cuda:0 in bf16 autocast, and the table adds
samples/s/GPU and the share of the bf16 dense peak (--peak-tflops, 989 for an H100 SXM), from
3 x the forward FLOPs per sample counted by torch's FlopCounterMode (see train_flops_per_sample).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO as ROOT, load_average, machine

MODELS = {
    # key: (model config, our freezing settings, open_clip freezing flags)
    "effl0": ("visionclip-effl0-minilm",
              {"pretrained_towers": True, "image_unlocked_groups": 6, "freeze_bn_stats": True, "text_unlocked_layers": 0},
              ["--lock-image", "--lock-image-unlocked-groups", "6", "--lock-text"]),
    "rn50": ("RN50", {"pretrained_towers": False}, []),
    "vitb16": ("ViT-B-16", {"pretrained_towers": False}, []),
}
OUR_KEYS = ("preprocess_cfg", "initial_weights")
OC_RATE = re.compile(r"Batch \(t\): [0-9.]+, ([0-9.eE+-]+)/s,")


# --- subprocess helpers --------------------------------------------------------------------
def run_measured(cmd: list[str], log_path: Path, cwd: Path = ROOT, timeout: float = 1800) -> tuple[int, float, float]:
    """Run cmd with output to log_path; return (exit code, peak RSS MB of its tree's largest process, wall s)."""
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024, time.time() - t0


def combined_rate(rates: list[float], batch: int) -> float:
    """Total samples / total time of per-step rates (each step processed `batch` samples)."""
    return len(rates) * batch / sum(batch / r for r in rates) if rates else float("nan")


def tail(path: Path, n: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


# --- data ----------------------------------------------------------------------------------
def synth_folder(cache: Path, n: int, size: int) -> Path:
    out = cache / f"synth-n{n}-s{size}"
    if (out / "labels.csv").is_file():
        return out
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "engine.cli", "synth", "--out", str(out), "--n", str(n), "--size", str(size)],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"rendered {n} synthetic images ({size} px) into {out} in {time.time() - t0:.0f} s")
    return out


# --- our loop ------------------------------------------------------------------------------
UNTUNED_MALLOC = ("import sys; import engine.memory as m; m.keep_freed_memory = lambda: False; "
                  "from engine.train.main import main; sys.exit(main(sys.argv[1:]))")


def run_ours(key: str, args, data: Path, work: Path, device: str, tuned_malloc: bool = True, tag: str = "") -> dict:
    """Our loop; ``tuned_malloc=False`` runs it with glibc's default malloc settings (the --allocator peer);
    ``tag`` keeps runs of other settings (--resolutions) in their own folders."""
    model, freeze, _ = MODELS[key]
    steps = args.warmup + args.steps
    cfg = {
        "model": model, **freeze, "image_size": args.image_size,
        "sources": [{"type": "synfundus", "path": str(data), "captions": "labels"}],
        "workers": args.workers, "augment": True, "steps": steps, "batch_size": args.batch_size,
        "warmup_steps": 1, "loss": "clip", "precision": "bf16" if device == "cuda" else "fp32",
        "log_every": 1, "save_every": 10**6, "val_every": 10**6, "val_synthetic": 0, "seed": 0,
    }
    loop = "ours" if tuned_malloc else "ours-untuned"
    run_dir = work / f"{loop}-{key}{tag}"
    cfg_path = work / f"{loop}-{key}{tag}.yaml"
    cfg_path.write_text(json.dumps(cfg, indent=1))  # JSON is valid YAML
    log = work / f"{loop}-{key}{tag}.log"
    entry = ["-m", "engine.train.main"] if tuned_malloc else ["-c", UNTUNED_MALLOC]
    rc, rss, wall = run_measured([sys.executable, *entry, "--config", str(cfg_path), "--out", str(run_dir),
                                  "--device", device], log)
    rows = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        rows = [json.loads(l) for l in metrics.read_text().splitlines() if l.strip()]
    rates = [r["samples_per_s"] for r in rows if "samples_per_s" in r and r["step"] > args.warmup]
    if rc != 0 or len(rates) < args.steps:
        print(f"[{loop}/{key}] failed (exit {rc}); log {log}:\n{tail(log)}")
    return {"model": model, "loop": loop, "rate": combined_rate(rates, args.batch_size), "rss": rss, "wall": wall,
            "steps": len(rates)}


# --- open_clip's loop ----------------------------------------------------------------------
OC_CHILD = r"""
import json, os, sys, tempfile
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import open_clip
from open_clip_train.main import main
from engine.factory import MODEL_CONFIG_DIR, resolve_package_path
name, argv = {name!r}, {argv!r}
ours = MODEL_CONFIG_DIR / f"{{name}}.json"
if ours.is_file():  # register our config with open_clip: open_clip keys only, package: paths resolved
    cfg = {{k: v for k, v in json.loads(ours.read_text()).items() if k not in {our_keys!r}}}
    for k in ("hf_model_name", "hf_tokenizer_name"):
        if k in cfg["text_cfg"]:
            cfg["text_cfg"][k] = resolve_package_path(cfg["text_cfg"][k])
    d = tempfile.mkdtemp()
    (open(os.path.join(d, name + ".json"), "w")).write(json.dumps(cfg))
    open_clip.add_model_config(d)
main(["--model", name] + argv)
"""


def run_open_clip(key: str, args, work: Path, device: str) -> dict:
    model, _, lock = MODELS[key]
    steps = args.warmup + args.steps
    argv = [
        "--dataset-type", "synthetic", "--train-num-samples", str(steps * args.batch_size),
        "--batch-size", str(args.batch_size), "--epochs", "1", "--workers", str(args.workers),
        "--precision", "amp_bf16" if device == "cuda" else "fp32", "--device", device,
        "--force-image-size", str(args.image_size), "--lr", "5e-4", "--wd", "0.05", "--warmup", "1",
        "--grad-clip-norm", "1.0", "--log-every-n-steps", "1", "--save-frequency", "0",
        "--zeroshot-frequency", "0", "--val-frequency", "0", "--report-to", "",
        "--logs", "none", "--name", f"bench-{key}-{time.strftime('%Y%m%d-%H%M%S')}", "--seed", "0", *lock,
    ]
    log = work / f"open_clip-{key}.log"
    code = OC_CHILD.format(root=str(ROOT), name=model, argv=argv, our_keys=OUR_KEYS)
    # --logs none: no checkpoint written; open_clip still puts out.log/params.txt under ./none/<name>
    rc, rss, wall = run_measured([sys.executable, "-c", code], log, cwd=work)
    rates = [float(m.group(1)) for m in OC_RATE.finditer(log.read_text(errors="replace"))]
    # open_clip logs step 0 too: one line per step
    measured = rates[args.warmup:]
    if rc != 0 or len(measured) < args.steps:
        print(f"[open_clip/{key}] failed (exit {rc}); log {log}:\n{tail(log)}")
    return {"model": model, "loop": "open_clip", "rate": combined_rate(measured, args.batch_size), "rss": rss,
            "wall": wall, "steps": len(measured)}


# --- FLOPs (GPU report only) ---------------------------------------------------------------
def train_flops_per_sample(key: str, image_size: int) -> float | None:
    """Training FLOPs per sample: 3 x the forward FLOPs of what a step runs (the usual fwd+bwd rule;
    frozen layers need no weight gradients, so it slightly overstates the effl0 setup).

    The forward is counted by torch's FlopCounterMode on CPU at batch 1. (Counting the backward
    directly over-reports depthwise convolutions, so the 3x rule is used instead.) With a frozen
    HF text tower our loop runs only the text projection per step (cached features); open_clip
    runs the frozen text transformer forward too, which this figure leaves out for both loops.
    """
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from engine.factory import create_model, create_tokenizer

        name, _, _ = MODELS[key]
        model, config = create_model(name, pretrained_towers=False)
        hf_text = "hf_model_name" in config["text_cfg"]
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model.encode_image(torch.randn(1, 3, image_size, image_size))
            if hf_text:
                proj = model.text.proj
                width = proj.in_features if hasattr(proj, "in_features") else proj[0].in_features
                proj(torch.randn(1, width))
            else:
                model.encode_text(create_tokenizer(config)(["a fundus photograph of a left eye"]))
        return 3.0 * fc.get_total_flops()
    except Exception as e:  # the figure is informative only
        print(f"FLOP count for {key} failed: {e}")
        return None


# --- main ----------------------------------------------------------------------------------
def compare_resolutions(keys: list[str], args, work: Path, device: str) -> int:
    """Our loop at each of ``--resolutions`` in one run (peers measured back to back, so a loaded
    machine slows them alike); prints samples/s, s/step and step time relative to the first size."""
    sizes = [int(x) for x in args.resolutions.split(",")]
    data = Path(args.data) if args.data else synth_folder(work, args.data_n, max([256, *sizes]))
    failed = False
    for key in keys:
        rows = []
        for size in sizes:
            args.image_size = size
            r = run_ours(key, args, data, work, device, tag=f"-{size}px")
            rows.append((size, r))
            failed |= r["steps"] < args.steps
        base = rows[0][1]["rate"]
        print(f"\n{MODELS[key][0]}, batch {args.batch_size}, {device}:")
        print(f"{'px':>5} {'samples/s':>10} {'s/step':>8} {'step time vs ' + str(sizes[0]):>18} {'peak RSS MB':>12}")
        for size, r in rows:
            step_s = args.batch_size / r["rate"] if r["rate"] > 0 else float("nan")
            rel = base / r["rate"] if r["rate"] > 0 else float("nan")
            print(f"{size:>5} {r['rate']:10.2f} {step_s:8.2f} {rel:18.2f} {r['rss']:12.0f}")
    return 1 if failed else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="effl0,rn50", help="comma list of: " + ", ".join(MODELS))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=1, help="steps run but not measured")
    ap.add_argument("--steps", type=int, default=3, help="measured steps")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=1, help="data loader workers (both loops)")
    ap.add_argument("--data-n", type=int, default=64, help="images in the pre-rendered folder our loop reads")
    ap.add_argument("--data", default=None, help="use this SynFundus-layout folder instead of rendering one")
    ap.add_argument("--work", default=None, help="keep configs, logs and rendered data here (default: a temp dir)")
    ap.add_argument("--allocator", action="store_true",
                    help="also run our loop with glibc's default malloc settings (CPU: the freed-memory tuning's gain)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak per GPU (H100 SXM: 989)")
    ap.add_argument("--resolutions", default=None, metavar="320,448,512",
                    help="our loop only, at each input size in turn (data rendered at the largest); step time "
                         "relative to the first size")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the runs to this JSON file")
    args = ap.parse_args(argv)
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    bad = [k for k in keys if k not in MODELS]
    if bad:
        ap.error(f"unknown model(s) {', '.join(bad)}; choose from {', '.join(MODELS)}")

    import torch

    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="visionclip-bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(x) for x in args.resolutions.split(",")] if args.resolutions else []
    data = Path(args.data) if args.data else synth_folder(work, args.data_n, max([256, *sizes]))
    print(f"{machine()}, load average {load_average()}; batch {args.batch_size}, "
          f"{args.image_size} px, {args.warmup} warm-up + {args.steps} measured steps; work dir {work}", flush=True)

    if args.resolutions:
        return compare_resolutions(keys, args, work, device)
    results = []
    for key in keys:
        runs = [lambda: run_ours(key, args, data, work, device), lambda: run_open_clip(key, args, work, device)]
        if args.allocator:
            runs.append(lambda: run_ours(key, args, data, work, device, tuned_malloc=False))
        for fn in runs:
            r = fn()
            results.append(r)
            print(f"  {r['model']:<24} {r['loop']:<9} {r['rate']:8.2f} samples/s  peak RSS {r['rss']:7.0f} MB  "
                  f"({r['steps']} steps measured, {r['wall']:.0f} s wall incl. start-up)", flush=True)

    print()
    head = f"{'model':<24} {'loop':<9} {'samples/s':>10} {'peak RSS MB':>12} {'ours/open_clip':>15}"
    if gpu:
        head += f" {'samples/s/GPU':>14} {'TFLOP/s':>8} {'% bf16 peak':>12}"
    print(head)
    print("-" * len(head))
    verdicts, allocator_gains = [], []
    for key in keys:
        ours, oc, *untuned = [r for r in results if r["model"] == MODELS[key][0]]
        if untuned and untuned[0]["rate"] > 0:
            allocator_gains.append(f"{MODELS[key][0]}: our loop with freed memory kept / with glibc's default malloc = "
                                   f"{ours['rate'] / untuned[0]['rate']:.2f} ({untuned[0]['rate']:.2f} samples/s untuned)")
        ratio = ours["rate"] / oc["rate"] if oc["rate"] == oc["rate"] and oc["rate"] > 0 else float("nan")
        flops = train_flops_per_sample(key, args.image_size) if gpu else None
        for r in (ours, oc):
            line = f"{r['model']:<24} {r['loop']:<9} {r['rate']:10.2f} {r['rss']:12.0f} " + \
                   (f"{ratio:15.2f}" if r is ours else f"{'':>15}")
            if gpu:
                world = 1  # single-process runs: one GPU each
                tflops = r["rate"] * flops / 1e12 if flops else float("nan")
                line += f" {r['rate'] / world:14.2f} {tflops:8.1f} {100 * tflops / args.peak_tflops:11.1f}%"
            print(line)
        verdicts.append(f"{MODELS[key][0]}: ours {'is not slower' if ratio >= 1 else 'IS SLOWER'} "
                        f"(ours/open_clip = {ratio:.2f})" if ratio == ratio else f"{MODELS[key][0]}: no ratio (a run failed)")
    for line in allocator_gains:
        print(line)
    print()
    if not gpu:
        print("no GPU: samples/s/GPU and share of bf16 peak not reported")
    print("our loop must not be slower than open_clip's:")
    for v in verdicts:
        print("  " + v)
    print("note: with a frozen Hugging Face text tower (effl0) our loop caches caption features, so a step runs no\n"
          "text transformer once its captions were seen; open_clip runs the frozen tower forward every step.\n"
          "Our data are real decoded PNGs with augmentation; open_clip's synthetic set is one black image.")
    if args.json:
        Path(args.json).write_text(json.dumps({"bench": "train", "device": device, "runs": results,
                                               "verdicts": verdicts}, indent=2, default=str))
    return 0 if all("IS SLOWER" not in v for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
