#!/bin/bash
# bench.gpu_train on a GPU machine that has PyTorch but no internet (a lent machine that receives <= 64 MiB).
#
#   bash bench/gpu_bundle.sh pack DIR        # here: DIR gets the prepared data + model skeletons (xz'd) and
#                                            # the wheels such a machine usually lacks (Python 3.12, x86-64)
#   bash bench/gpu_bundle.sh run DIR [ARGS]  # there, from the repository root: install them into /tmp/site,
#                                            # unpack, run `python3 -m bench.gpu_train --from ...` with ARGS;
#                                            # results and log under $OUT (default: ./gpu-results)
#
# Wheels: TRL, datasets, pydantic (tuneforge's configs), dill/multiprocess, and bitsandbytes stripped to its
# CUDA 13.0 library (the whole wheel is 43 MB). The GPU machine's own torch, transformers, peft and
# accelerate are used: what a user there would have. Then, here: python -m bench.gpu_train --report R.json
set -euo pipefail
cmd=${1:?pack or run}; dir=${2:?folder}; shift 2

if [ "$cmd" = pack ]; then
  mkdir -p "$dir" && dir=$(cd "$dir" && pwd)
  py=${PYTHON:-$PWD/.venv/bin/python}
  PYTHONPATH=. "$py" -m bench.gpu_train --prepare "$dir/prep"
  tar -C "$dir" -cJf "$dir/prep.tar.xz" prep && rm -rf "$dir/prep"
  plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64)
  ver() { "$py" -m pip show "$1" 2>/dev/null | awk '/^Version/{print $2}'; }
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
    -d "$dir" "trl==$(ver trl)" "datasets==$(ver datasets)" "pydantic==$(ver pydantic)" \
    "pydantic_core==$(ver pydantic_core)" "annotated-types==$(ver annotated-types)" \
    "typing-inspection==$(ver typing-inspection)" "dill==$(ver dill)" "multiprocess==$(ver multiprocess)" bitsandbytes
  tmp=$(mktemp -d)
  (cd "$tmp" && unzip -q "$dir"/bitsandbytes-*.whl && find . -name 'libbitsandbytes_*.so' ! -name '*cuda130*' -delete \
    && "$py" -c "import shutil; shutil.make_archive('bnb', 'zip', '.')")
  mv "$tmp/bnb.zip" "$dir/bnb_slim.zip" && rm -rf "$tmp" "$dir"/bitsandbytes-*.whl
  du -sh "$dir"
elif [ "$cmd" = run ]; then
  out=${OUT:-$PWD/gpu-results}; site=/tmp/site; mkdir -p "$out" "$site" /tmp/prep
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$dir"/*.whl
  python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$dir/bnb_slim.zip" "$site"
  tar -xJf "$dir/prep.tar.xz" -C /tmp/prep
  export PYTHONPATH=$site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TUNEFORGE_CACHE=/tmp/tfcache TOKENIZERS_PARALLELISM=false
  nvidia-smi --query-gpu=name,clocks.sm,memory.used --format=csv || true
  python3 -m bench.gpu_train --from /tmp/prep/prep --out "$out/gpu_train.json" "$@" 2>&1 | tee "$out/log.txt" \
    | grep -v -E "it/s\]|examples/s\]|step/s|s/step|Loading weights|warnings.warn"
else
  echo "usage: bash bench/gpu_bundle.sh pack DIR | run DIR [bench.gpu_train args]" >&2; exit 2
fi
