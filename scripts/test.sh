#!/usr/bin/env bash
# The test command: lint, then the whole suite (slow tests included). Used by `make test` and .ci/run.
set -uo pipefail
VENV=${1:-.venv}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$VENV/bin/ruff" check . || exit 1
# The UI's browser tests drive the system Chromium (Playwright's own download cannot work offline).
# A missing browser is installed here; if that fails, the tests fail (they never skip).
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -q chromium >/dev/null || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; } \
    || echo "warning: could not install chromium; the UI browser tests will fail" >&2
fi
"$VENV/bin/python" -m pytest -q -ra --durations=15 "${@:2}"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit "$rc"
