#!/usr/bin/env bash
# One short run for a lent GPU machine (issue 25): render on every core, train the default recipe in
# bf16 on far more samples than a CPU can, evaluate, and copy checkpoint + metrics to $OUT.
# Prints samples/s and MFU (model FLOPs utilisation against the bf16 dense peak).
#
#   device run:  bash research/gpu_run.sh            (from the repository root; $OUT is set there)
#   dry run on CPU: OUT=/tmp/gpu_out WORK=/tmp/gpu_work DEVICE=cpu N=16 SIZE=96 STEPS=2 BATCH=4 BENCH_N=22 \
#                   bash research/gpu_run.sh
#
# Sized for a 15-minute device budget (start-up included): about 3 min rendering, 6 min training,
# 1 min evaluating. Every size is an environment variable:
#   N=40000 renders at SIZE=320 px; STEPS=1000 steps of BATCH=128 (128k samples seen);
#   WORKERS=nproc-2 loader workers; MASK_LOSS=0 (>0: train on the on-the-fly generator with the mask
#   head instead of the pre-rendered folder); PEAK_TFLOPS=989 (H100/H200 SXM bf16 dense);
#   TRAIN_TIMEOUT=480 s (the run is killed past it; its last checkpoint still comes back); BENCH_N=220
#   held-out synthetic evaluation images (seed 1000000007, as training's validation).
# Offline: if the package is not importable, it installs from wheels carried in wheels/ (pip
# --no-index); nothing is downloaded. Real photographs under ../shared/eval or shared/eval are
# evaluated on when present (evaluation only; never trained on).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

OUT=${OUT:?set OUT to the folder that comes back}
CORES=$(nproc)
N=${N:-40000}
SIZE=${SIZE:-320}
STEPS=${STEPS:-1000}
BATCH=${BATCH:-128}
WORKERS=${WORKERS:-$(( CORES > 3 ? CORES - 2 : 1 ))}
MASK_LOSS=${MASK_LOSS:-0}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-480}
DEVICE=${DEVICE:-cuda}
BENCH_N=${BENCH_N:-220}
WORK=${WORK:-/tmp/visionclip_gpu}
DATA=$WORK/synth_${N}_${SIZE}
RUN=$WORK/run
mkdir -p "$OUT" "$WORK"
log() { echo "[gpu_run $(date -u +%H:%M:%S)] $*" | tee -a "$OUT/gpu_run.log"; }

# --- install (offline) -------------------------------------------------------------------------
if ! python -c "import engine, open_clip, timm, safetensors" 2>/dev/null; then
  [ -d wheels ] || { log "engine is not importable and no wheels/ folder was carried"; exit 2; }
  log "installing from wheels/"
  python -m pip install --quiet --no-index --find-links wheels -e .
fi
python - <<'EOF' | tee -a "$OUT/gpu_run.log"
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
EOF

# --- render on every core ----------------------------------------------------------------------
t0=$(date +%s)
if [ ! -f "$DATA/labels.csv" ] && [ "$MASK_LOSS" = 0 ]; then
  log "rendering $N images at $SIZE px on $CORES processes"
  python -m engine.cli synth --out "$DATA" --n "$N" --seed 1 --size "$SIZE" --workers "$CORES"
fi
log "render: $(( $(date +%s) - t0 )) s"

# --- train (bf16) ------------------------------------------------------------------------------
if [ "$MASK_LOSS" = 0 ]; then
  SOURCES="[{type: synfundus, path: $DATA, captions: labels}]"
else
  SOURCES="[{type: synthetic, seed: 1, size: $SIZE}]"
fi
t0=$(date +%s)
log "training $STEPS steps x $BATCH at $SIZE px, bf16, $WORKERS workers, mask_loss_weight $MASK_LOSS"
set +e
timeout --signal=INT "$TRAIN_TIMEOUT" python -m engine.cli train --config configs/visionclip-default.yaml \
  --out "$RUN" --device "$DEVICE" --set precision=bf16 --set "image_size=$SIZE" --set "steps=$STEPS" --set "batch_size=$BATCH" \
  --set "workers=$WORKERS" --set "sources=$SOURCES" --set "mask_loss_weight=$MASK_LOSS" \
  --set "save_every=$(( STEPS / 4 > 0 ? STEPS / 4 : 1 ))" --set "val_every=$(( STEPS / 2 > 0 ? STEPS / 2 : 1 ))" \
  --set warmup_steps=$(( STEPS / 20 + 1 )) 2>&1 | tee -a "$OUT/train.log"
TRAIN_RC=${PIPESTATUS[0]}
set -e
log "train: exit $TRAIN_RC after $(( $(date +%s) - t0 )) s"

# --- throughput and MFU ------------------------------------------------------------------------
python - "$RUN" "$SIZE" "$PEAK_TFLOPS" <<'EOF' | tee -a "$OUT/gpu_run.log"
import json, statistics, sys
from pathlib import Path
from bench.train import train_flops_per_sample  # 3 x forward FLOPs of what a step runs

run, size, peak = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"samples_per_s"' in l]
rates = [r["samples_per_s"] for r in rows[len(rows) // 5:]] or [r["samples_per_s"] for r in rows]  # skip warm-up
if not rates:
    sys.exit("no training rows logged")
rate = statistics.median(rates)
flops = train_flops_per_sample("effl0", size)
mfu = f"{100 * rate * flops / (peak * 1e12):.2f}%" if flops else "n/a"
print(f"samples/s (median, after warm-up): {rate:.1f}   steps logged: {rows[-1]['step']}   "
      f"training GFLOPs/sample: {flops / 1e9:.2f}   MFU vs {peak:.0f} TFLOPs bf16: {mfu}")
EOF

# --- evaluate ----------------------------------------------------------------------------------
MODEL=$RUN/model.safetensors
if [ ! -f "$MODEL" ]; then  # stopped by the timeout: the newest complete checkpoint
  MODEL=$(ls "$RUN"/checkpoints/step_*[0-9].safetensors 2>/dev/null | tail -1 || true)
fi
if [ -n "$MODEL" ] && [ -f "$MODEL" ]; then
  BENCH=$WORK/synth_benchmark
  [ -f "$BENCH/labels.csv" ] || python -m engine.cli synth --benchmark --out "$BENCH" --n "$BENCH_N" --seed 1000000007 \
    --size "$SIZE" --workers "$CORES"
  for d in "$BENCH" ../shared/eval/eyedisease_dev ../shared/eval/palm_dev shared/eval/eyedisease_dev shared/eval/palm_dev; do
    [ -f "$d/labels.csv" ] || continue
    name=$(basename "$d")
    python -m engine.cli eval --model "$MODEL" --data "$d" --device "$DEVICE" --json > "$OUT/eval_$name.json" \
      && log "eval $name: $(python -c "import json,sys; r=json.load(open(sys.argv[1])); print('balanced accuracy', r.get('balanced_accuracy'), 'mean AUC', r.get('mean_auc'))" "$OUT/eval_$name.json")"
  done
  cp "$MODEL" "$OUT/model.safetensors"
else
  log "no model file to evaluate"
fi
cp "$RUN"/metrics.jsonl "$RUN"/config.json "$OUT"/ 2>/dev/null || true
cp "$RUN"/training.png "$RUN"/best.safetensors "$OUT"/ 2>/dev/null || true
log "done; files in $OUT"
