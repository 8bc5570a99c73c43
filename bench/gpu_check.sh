#!/usr/bin/env bash
# GPU truth run: every GPU check of dlbench in one script, for a bare GPU machine with no network.
#
#   bash bench/gpu_check.sh [OUTDIR]          # on a CUDA machine (torch, typer, pandas, timm installed)
#   DLBENCH_GPU_DRY=1 bash bench/gpu_check.sh # the same steps on CPU with tiny sizes (checks the script)
#
# Runs from the working tree with PYTHONPATH (no install). Writes, under OUTDIR (default $OUT, else
# ./gpu_out): gpu_results.tar.gz (results/gpu/*.csv + sidecars, reports/gpu/report.md, summary.txt,
# peaks.json, the pytest log), plus report.md, summary.txt and log.txt beside it. Each section has its
# own time limit so one slow section cannot starve the rest; the whole run stays under ~7 minutes on
# an H100/H200. Sections run in order of importance: peaks, encoder, resnet, optimizer, attention, tests.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# a tree copied without .git names its commit in .dlbench_commit (write it with: git rev-parse HEAD > .dlbench_commit)
if [[ -z "${DLBENCH_GIT_COMMIT:-}" && -f .dlbench_commit ]]; then export DLBENCH_GIT_COMMIT=$(cat .dlbench_commit); fi
PY=${PYTHON:-python3}
DEST=${1:-${OUT:-gpu_out}}
WORK=$(mktemp -d)
RES=$WORK/results/gpu
REP=$WORK/reports/gpu
mkdir -p "$RES" "$REP" "$DEST"
export DLBENCH_CACHE_DIR=$WORK/cache
LOG=$DEST/log.txt
: >"$LOG"
say() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$LOG"; }
# dl SECONDS ARGS...: one dlbench command under its own time limit, its output kept in the log
dl() { local t=$1; shift; timeout -k 10 "$t" "$PY" -m bench.cli "$@" 2>&1 | tee -a "$LOG" | tail -n 30; }

# pack: refresh the tarball after every section, so a run cut short still brings back what finished
pack() { tar czf "$DEST/gpu_results.tar.gz" -C "$WORK" results reports 2>/dev/null; }

# DLBENCH_GPU_QUICK=1: a smaller grid (~4 min) for a nearly spent device budget (narrower encoder, fewer lengths).
ENC=()
if [[ "${DLBENCH_GPU_DRY:-0}" == "1" ]]; then
  DEV=cpu PRESET=tiny LENS=16,32 L4=32 LMATH=16 T=60 MAXT=0.2 PEAK_N=512 CL=""
  FP32_LENS=16 MODES_SWEEP=forward,train
else
  DEV=cuda PRESET=large LENS=1024,2048,4096,8192 L4=4096 LMATH=2048 T=150 MAXT=1.0 PEAK_N=8192 CL=--channels-last
  FP32_LENS=$LENS MODES_SWEEP=forward,train
  if [[ "${DLBENCH_GPU_QUICK:-0}" == "1" ]]; then
    LENS=1024,2048,8192 FP32_LENS=1024,4096 MODES_SWEEP=train MAXT=0.5 ENC=(--width 1536 --depth 8)
  fi
fi
COMMON=(--device "$DEV" --preset "$PRESET" --timeout "$T" --max-time "$MAXT")

say "environment"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.total,temperature.gpu --format=csv 2>&1 || true
  "$PY" -c "import torch,sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  "$PY" -m bench.cli env; } 2>&1 | tee -a "$LOG"

say "peaks: matmul ${PEAK_N}^3 and device copy"
timeout 60 "$PY" - "$DEV" "$PEAK_N" "$RES/peaks.json" <<'EOF' 2>&1 | tee -a "$LOG"
import json, sys
from bench.harness.peak import measured_copy_bandwidth_gbs, measured_peak_tflops
dev, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
peaks = {
    "bf16_tflops": measured_peak_tflops(dev, "amp-bf16", size=n),
    "fp32_tflops": measured_peak_tflops(dev, "fp32", size=n // 2),
    "copy_gbs": measured_copy_bandwidth_gbs(dev),
}
json.dump(peaks, open(path, "w"), indent=1)
print(json.dumps(peaks))
EOF

say "encoder train: fp32 / amp-bf16 / amp-fp16 x checkpointing none / full"
dl 170 run encoder "${COMMON[@]}" "${ENC[@]}" --mode train \
  --precision fp32,amp-bf16,amp-fp16 --checkpointing none,full --out "$RES/encoder.csv"
pack

say "resnet50 train at AMP, channels_last: dlcore preset vs timm resnet50"
dl 90 run resnet "${COMMON[@]}" --mode train --amp $CL --param impl=dlcore,timm --out "$RES/resnet.csv"
pack

say "optimizer step bandwidth"
dl 60 run optimizer "${COMMON[@]}" --mode train \
  --param optimizer=adamw_warmup,adamw_fused,adamw_foreach --out "$RES/optimizer.csv"
pack

say "attention: dlcore vs direct F.scaled_dot_product_attention at L=$L4, then the length sweep, then the math path"
dl 60 run attention "${COMMON[@]}" --mode forward,train --precision amp-bf16 --seq-len "$L4" \
  --param impl=dlcore,sdpa --out "$RES/attention.csv"
pack
dl 100 run attention "${COMMON[@]}" --mode "$MODES_SWEEP" --precision amp-bf16 --seq-len "$LENS" \
  --param impl=dlcore --resume --out "$RES/attention.csv"
pack
dl 60 run attention "${COMMON[@]}" --mode "$MODES_SWEEP" --precision fp32 --seq-len "$FP32_LENS" \
  --param impl=dlcore --resume --out "$RES/attention.csv"
pack
dl 40 run attention "${COMMON[@]}" --mode forward,train --precision amp-bf16 --seq-len "$LMATH" \
  --param impl=dlcore --param attn_impl=math --resume --out "$RES/attention.csv"
pack

say "GPU-marked tests"
timeout 90 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -n 25 | tee "$REP/pytest_gpu.txt" | tee -a "$LOG"

say "report and summary"
"$PY" -m bench.cli report "$RES"/*.csv -o "$REP" --title "dlbench GPU truth run ($DEV)" 2>&1 | tee -a "$LOG"
pack
"$PY" -m bench.cli gpu-summary "$RES" --peaks "$RES/peaks.json" 2>&1 | tee "$REP/summary.txt" | tee -a "$LOG"
cp "$REP/summary.md" "$REP/summary.txt" "$DEST/" 2>/dev/null
tar czf "$DEST/gpu_results.tar.gz" -C "$WORK" results reports
say "done: $(ls "$DEST")"
