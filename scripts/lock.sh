#!/usr/bin/env bash
# Re-resolves requirements/lock.txt: installs setup.py's requirements (all extras) into a
# scratch venv with no constraints and freezes the result. Review the diff before committing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(PYENV_VERSION=${PYENV_VERSION:-3.10.13} command -v python3.10 || true)}
[ -n "$PY" ] || { echo "lock: set PYTHON to a Python 3.10 interpreter" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet pip==24.3.1 setuptools wheel
"$tmp/venv/bin/pip" install --quiet '.[all]'
{
  sed -n '1,4p' requirements/lock.txt
  "$tmp/venv/bin/pip" freeze --exclude-editable | grep -v -i '^mvke-tf'
  "$tmp/venv/bin/pip" list --format=freeze 2>/dev/null | grep -E '^(setuptools|wheel)=='
} > requirements/lock.txt.new
mv requirements/lock.txt.new requirements/lock.txt
echo "lock: wrote requirements/lock.txt ($(grep -c '==' requirements/lock.txt) pins)"
