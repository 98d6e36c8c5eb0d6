#!/usr/bin/env bash
# Create the benchmark-only virtual environment holding ns.py (PyPI "ns-py"),
# the packet-level simulator benchmarks/netstack.py compares against.
# 0.4.5 is the release that installs on Python 3.11 (it declares a newer
# Python, hence --ignore-requires-python).  The environment lives outside
# the repository (default: $TMPDIR/uvmloan-nspy-venv) and is never a
# dependency of the library or its tests.
#
#   bash benchmarks/ns_py_env.sh [DIR]     prints the environment's python
set -euo pipefail
dir="${1:-${UVMLOAN_NSPY_VENV:-${TMPDIR:-/tmp}/uvmloan-nspy-venv}}"
if [ ! -x "$dir/bin/python" ]; then
    python3 -m venv "$dir" >&2
    # ns-py alone without its declared dependencies (with
    # --ignore-requires-python pip would also take releases of them that do
    # not run on 3.11), then what the modules used here import, resolved
    # normally.
    "$dir/bin/python" -m pip install -q --disable-pip-version-check \
        --ignore-requires-python --no-deps "ns-py==0.4.5" >&2
    "$dir/bin/python" -m pip install -q --disable-pip-version-check simpy numpy networkx >&2
fi
echo "$dir/bin/python"
