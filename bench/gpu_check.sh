#!/usr/bin/env bash
# GPU truth run: every GPU check of dlbench in one script, for a bare GPU machine with no network.
#
#   bash bench/gpu_check.sh [OUTDIR]          # on a CUDA machine (torch, typer, pandas, matplotlib installed)
#   DLBENCH_GPU_DRY=1 bash bench/gpu_check.sh # the same steps on CPU with tiny sizes (checks the script)
#
# Runs from the working tree with PYTHONPATH (no install). Writes under OUTDIR (default $OUT, else
# ./gpu_out): gpu_results.tar.gz (results/gpu/*.csv + sidecars + gate JSON, reports/gpu/: the report,
# the profile's summaries, summary.txt), plus log.txt and summary.md beside it. The tarball is refreshed
# after every section, so a run cut short still brings back what finished. Each section has its own
# time limit; the whole run is sized for about 7 minutes on an H100/H200. Sections, in order of
# importance (the first GPU run already measured peaks, encoder MFU, ResNet-50 vs timm, the optimizer):
#   1. attention: dlcore (SDPA path) vs direct F.scaled_dot_product_attention vs nn.MultiheadAttention,
#      bf16 forward and train, L = 4096 first, then 1k, 2k, 8k (achieved TFLOP/s in the rows)
#   2. parallel: encoder --parallel none,ddp,fsdp --nproc 1 over nccl (the launch path and memory
#      accounting on one GPU, not scaling)
#   3. profile: dlbench profile encoder --amp on CUDA (top kernels; HTA's breakdown if installed)
#   4. measurement truth: 10 gate A/A runs of attention, and 5 separate runs of one configuration
#   5. dlbench compare --by precision (encoder fp32 vs amp-bf16, with joules per step and per item
#      from NVML) and dlbench report over everything
#   6. torch.compile on CUDA: encoder --compile none,default,reduce-overhead (inductor's Triton kernels,
#      CUDA graphs), compile_time_s, graph breaks, recompiles; compare --by compile (break-even steps)
#   7. dlbench budget: encoder amp-bf16 without and with checkpointing under a 12 GiB cap (a smaller
#      card on this one: set_per_process_memory_fraction, peak reserved), its table and the report
#   then the GPU-marked tests if time is left.
# Energy needs Zeus (dlbench[energy]), which the image lacks: carry its wheels in .whl/ (git-ignored),
# downloaded here first with the command in bench/energy-wheels.txt; the script installs them from
# there (--no-index --find-links) into a folder of this run. Without them the energy cells stay empty.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# a tree copied without .git names its commit in .dlbench_commit (write it with: git rev-parse HEAD > .dlbench_commit)
if [[ -z "${DLBENCH_GIT_COMMIT:-}" && -f .dlbench_commit ]]; then export DLBENCH_GIT_COMMIT=$(cat .dlbench_commit); fi
PY=${PYTHON:-python3}
DEST=${1:-${OUT:-gpu_out}}
WORK=$(mktemp -d)
# the tarball in $DEST holds what matters; the working folder goes however the script ends
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT; trap 'exit 143' TERM
RES=$WORK/results/gpu
REP=$WORK/reports/gpu
mkdir -p "$RES" "$REP" "$DEST"
export DLBENCH_CACHE_DIR=$WORK/cache
LOG=$DEST/log.txt
: >"$LOG"
say() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$LOG"; }
# dl SECONDS ARGS...: one dlbench command under its own time limit, its output kept in the log
dl() { local t=$1; shift; timeout -k 10 "$t" "$PY" -m bench.cli "$@" 2>&1 | tee -a "$LOG" | tail -n 30; }
# pack: refresh the tarball (raw profiler traces stay out: they are large; their summaries go in)
pack() { tar czf "$DEST/gpu_results.tar.gz" --exclude='*.pt.trace.json*' --exclude='trace.json' --exclude='*.lock' \
  --exclude='memory_timeline.*' -C "$WORK" results reports 2>/dev/null; }

if [[ "${DLBENCH_GPU_DRY:-0}" == "1" ]]; then
  DEV=cpu PRESET=tiny L4=32 LENS=16,64 T=90 MAXT=0.2 GATE_RUNS=2 GATE=(--slices 4 --slice-time 0.05 --pairs 1)
  ENC=(--preset tiny) PROF=(--preset tiny) EMAXT=0.2 BUDGET=2MiB
else
  DEV=cuda PRESET=large L4=4096 LENS=1024,2048,8192 T=150 MAXT=0.5 GATE_RUNS=10 GATE=(--slices 12 --pairs 2)
  ENC=(--preset large --depth 4) PROF=(--preset large --depth 4) EMAXT=3  # NVML needs a window of 2 s
  BUDGET=12GiB
fi
COMMON=(--device "$DEV" --timeout "$T" --max-time "$MAXT")

# Zeus for the energy columns, from the carried wheels (only packages the image lacks: nothing is shadowed)
if compgen -G ".whl/zeus-*.whl" >/dev/null; then
  if "$PY" -m pip install -q --no-index --find-links .whl --no-deps --no-compile --no-cache-dir \
      --target "$WORK/site" -r bench/energy-wheels.txt >>"$LOG" 2>&1; then
    export PYTHONPATH="$PYTHONPATH:$WORK/site"
    say "energy: Zeus installed from .whl/ into $WORK/site"
  else
    say "energy: installing Zeus from .whl/ failed (see above); the energy cells stay empty"
  fi
else
  say "energy: no .whl/zeus-*.whl carried (bench/energy-wheels.txt has the download step); energy cells stay empty"
fi

say "environment"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.total,temperature.gpu --format=csv 2>&1 || true
  "$PY" -c "import torch,sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  "$PY" -c "import hta; print('HTA', getattr(hta, '__version__', 'installed'))" 2>/dev/null || echo "HTA not installed"
  "$PY" -m bench.cli env
  "$PY" -m bench.harness.energy_meter "$DEV"; } 2>&1 | tee -a "$LOG"

say "1. attention at L=$L4: dlcore vs sdpa vs torch (nn.MultiheadAttention), bf16, forward and train"
dl 120 run attention "${COMMON[@]}" --preset "$PRESET" --mode forward,train --precision amp-bf16 \
  --seq-len "$L4" --param impl=dlcore,sdpa,torch --out "$RES/attention.csv"
pack

say "2. parallel over nccl (gloo on CPU): encoder none / ddp / fsdp at --nproc 1"
dl 150 run encoder "${COMMON[@]}" "${ENC[@]}" --mode train --amp --parallel none,ddp,fsdp --nproc 1 \
  --out "$RES/parallel.csv"
pack

say "3. profile: encoder --amp"
dl 120 profile encoder --device "$DEV" "${PROF[@]}" --amp -o "$REP/profile_encoder"
pack

say "4a. gate A/A: attention at L=$L4 bf16 train against itself, $GATE_RUNS runs"
for i in $(seq 1 "$GATE_RUNS"); do
  dl 60 gate attention --aa --device "$DEV" --preset "$PRESET" -p seq_len="$L4" --precision amp-bf16 \
    "${GATE[@]}" --format json --out "$RES/gate_aa_$i.json" >/dev/null
  "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print('gate A/A', sys.argv[2], d.get('verdict'), d.get('ratio'), d.get('ci_low'), d.get('ci_high'))" \
    "$RES/gate_aa_$i.json" "$i" 2>&1 | tee -a "$LOG"
done
pack

say "4b. five separate runs of attention L=$L4 bf16 train (run-to-run spread)"
for i in 1 2 3 4 5; do
  dl 40 run attention "${COMMON[@]}" --preset "$PRESET" --mode train --precision amp-bf16 --seq-len "$L4" \
    --param impl=dlcore --out "$RES/spread_$i.csv" >/dev/null
done
"$PY" - "$RES" <<'EOF' 2>&1 | tee -a "$LOG"
import sys, glob, pandas as pd
meds = [float(pd.read_csv(p)["time_median_ms"].iloc[0]) for p in sorted(glob.glob(sys.argv[1] + "/spread_*.csv"))]
if meds:
    print("separate-run medians (ms):", [round(m, 4) for m in meds], f"spread max/min-1 = {max(meds) / min(meds) - 1:.1%}")
EOF
pack

say "5a. encoder fp32 vs amp-bf16 x checkpointing (time and energy), then compare --by precision"
dl 150 run encoder --device "$DEV" --timeout "$T" --max-time "$EMAXT" "${ENC[@]}" --mode train \
  --precision fp32,amp-bf16 --checkpointing none,full --out "$RES/precision.csv"
"$PY" - "$RES/precision.csv" <<'EOF' 2>&1 | tee -a "$LOG"
import sys, pandas as pd
df = pd.read_csv(sys.argv[1])
cols = ["precision", "checkpointing", "time_median_ms", "energy_j_per_step", "energy_j_per_item", "avg_power_w",
        "energy_source", "energy_devices", "energy_window_s"]
print(df[[c for c in cols if c in df.columns]].to_string(index=False))
EOF
dl 30 compare "$RES/precision.csv" --by precision
dl 30 compare "$RES/precision.csv" --by precision --format json --out "$RES/by_precision.json" >/dev/null
dl 30 compare "$RES/precision.csv" --by precision --format markdown --out "$REP/by_precision.md" >/dev/null
pack

say "1b. attention length sweep L=$LENS: dlcore vs sdpa vs torch"
dl 150 run attention "${COMMON[@]}" --preset "$PRESET" --mode forward,train --precision amp-bf16 \
  --seq-len "$LENS" --param impl=dlcore,sdpa,torch --resume --out "$RES/attention.csv"
pack

say "6. torch.compile: encoder --compile none,default,reduce-overhead (CUDA graphs; skipped on CPU)"
dl 300 run encoder --device "$DEV" --timeout 240 --max-time "$MAXT" "${ENC[@]}" --mode train --amp \
  --compile none,default,reduce-overhead --out "$RES/compile.csv"
"$PY" - "$RES/compile.csv" <<'EOF' 2>&1 | tee -a "$LOG"
import sys, pandas as pd
df = pd.read_csv(sys.argv[1])
cols = ["compile", "status", "time_median_ms", "compile_time_s", "graph_breaks", "unique_graphs", "recompiles", "reason"]
print(df[[c for c in cols if c in df.columns]].to_string(index=False))
EOF
dl 30 compare "$RES/compile.csv" --by compile
pack

say "7. budget: encoder amp-bf16, checkpointing none vs full, the largest batch under a $BUDGET cap"
dl 200 budget encoder --device "$DEV" --timeout "$T" --max-time "$MAXT" "${ENC[@]}" --memory "$BUDGET" \
  --precision amp-bf16 --checkpointing none,full --tolerance 0.1 --max-batch 256 --csv "$RES/budget.csv" \
  --format markdown --out "$REP/budget.md"
pack

say "5b. report over everything"
CSVS=("$RES/attention.csv" "$RES/parallel.csv" "$RES/precision.csv" "$RES/compile.csv" "$RES/budget.csv")
EXIST=(); for f in "${CSVS[@]}"; do [[ -f $f ]] && EXIST+=("$f"); done
CMP=(); [[ -f $RES/by_precision.json ]] && CMP=(--compare "$RES/by_precision.json")
PRF=(); [[ -f $REP/profile_encoder/summary.json ]] && PRF=(--profile "$REP/profile_encoder")
dl 60 report "${EXIST[@]}" "${CMP[@]}" "${PRF[@]}" -o "$REP/report" --title "dlbench GPU truth run ($DEV)"
cp "$REP/report/summary.md" "$DEST/" 2>/dev/null
pack

say "GPU-marked tests"
timeout 90 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -n 25 | tee "$REP/pytest_gpu.txt" | tee -a "$LOG"
pack
say "done: $(ls "$DEST")"
