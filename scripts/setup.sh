#!/usr/bin/env bash
# Creates .venv with Python 3.10 and installs mvke-tf with every extra, at the exact
# versions of requirements/lock.txt. Fast (a second or two) when nothing changed.
#
# The interpreter is found, in order, from: $PYTHON, `python3.10` on PATH, pyenv.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
LOCK=requirements/lock.txt
PIP_VERSION=24.3.1

is_py310() {  # prints the interpreter's path when it runs and is 3.10
  "$@" -c 'import sys; assert sys.version_info[:2] == (3, 10); print(sys.executable)' 2>/dev/null
}

tried=()
PY=""
if [ -n "${PYTHON:-}" ]; then
  tried+=("\$PYTHON=$PYTHON")
  PY=$(is_py310 "$PYTHON") || PY=""
fi
if [ -z "$PY" ] && command -v python3.10 >/dev/null 2>&1; then
  tried+=("python3.10 on PATH ($(command -v python3.10))")
  PY=$(is_py310 python3.10) || PY=""
fi
if [ -z "$PY" ] && command -v pyenv >/dev/null 2>&1; then
  v=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.10\.[0-9]+$' | sort -t. -k3,3n | tail -n 1 || true)
  tried+=("pyenv (3.10 versions installed: ${v:-none})")
  if [ -n "$v" ]; then
    PY=$(PYENV_VERSION="$v" is_py310 "$(PYENV_VERSION="$v" pyenv which python)") || PY=""
  fi
fi
if [ -z "$PY" ]; then
  {
    echo "setup: no Python 3.10 interpreter found."
    echo "  tried: ${tried[*]:-\$PYTHON (unset), python3.10 (not on PATH), pyenv (not installed)}"
    echo "  mvke-tf needs Python 3.10 (TFX 1.16 wheels; newer TFX needs glibc >= 2.38)."
    echo "  fix: install it (e.g. 'pyenv install 3.10.13', 'apt-get install python3.10', or 'uv python install 3.10')"
    echo "       and re-run, or point PYTHON at it: PYTHON=/path/to/python3.10 make setup"
  } >&2
  exit 1
fi

stamp_of() {
  { "$PY" -c 'import sys; print(sys.version)'; echo "$PIP_VERSION"; cat "$LOCK" setup.py; } | sha256sum | cut -d' ' -f1
}
want=$(stamp_of)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.setup-stamp" 2>/dev/null)" = "$want" ]; then
  echo "setup: $VENV is up to date ($("$VENV/bin/python" --version))"
  exit 0
fi

echo "setup: creating $VENV with $PY ($("$PY" --version 2>&1))"
if [ -x "$VENV/bin/python" ] && ! is_py310 "$VENV/bin/python" >/dev/null; then
  echo "setup: $VENV holds another Python; recreating it"
  rm -rf "$VENV"
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
start=$(date +%s)
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet "pip==$PIP_VERSION"
"${pip[@]}" install --quiet -c "$LOCK" setuptools wheel
# No build isolation: the editable build uses the pinned setuptools above, not whatever is newest.
"${pip[@]}" install --quiet --no-build-isolation -c "$LOCK" -e '.[all]'
"$VENV/bin/python" -m pip check >/dev/null || { "$VENV/bin/python" -m pip check; exit 1; }
echo "$want" > "$VENV/.setup-stamp"
echo "setup: installed in $(( $(date +%s) - start )) s; $(du -sh "$VENV" | cut -f1) in $VENV"
