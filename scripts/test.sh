#!/usr/bin/env bash
# The test command: lint, then the whole suite (slow tests included). Used by `make test` and .ci/run.
set -uo pipefail
VENV=${1:-.venv}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$VENV/bin/ruff" check . || exit 1
"$VENV/bin/python" -m pytest -q -ra --durations=15 "${@:2}"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit "$rc"
