#!/bin/sh
# Builds the modelcache-operator wheel from SRC_DIR and installs it into a fresh venv at VENV_DIR.
# The only install recipe: the Dockerfile's builder stage and tests/component/test_image_build.py both
# run it, so the test exercises exactly what the image ships.
# Usage: install-wheel.sh SRC_DIR VENV_DIR   (PYTHON selects the interpreter, default python3)
set -eu
src=$1
venv=$2
python=${PYTHON:-python3}
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT

"$python" -m venv "$venv"
# --no-deps: only our own wheel is built here; its dependencies come from the index as released wheels.
"$venv/bin/pip" wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$wheels" "$src"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$wheels"/modelcache_operator-*.whl
# A dependency whose own requirements the resolver left unmet fails the build, not the first download.
"$venv/bin/pip" check --disable-pip-version-check
# The prewarm init container copies prewarm.py/prewarm.sh into serving pods that run as any UID.
find "$venv" -path '*/site-packages/modelcache_operator/prewarm/*' -type f -exec chmod a+r {} +
