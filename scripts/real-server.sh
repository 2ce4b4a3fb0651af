#!/bin/sh
# Install, start and stop a real llama.cpp server (llama-cpp-python + Gemma 3 270M)
# for streamkit's `real` tests. The logic lives in real_server.py (stdlib only);
# this wrapper just finds a Python 3.9+ to run it.
#
#   scripts/real-server.sh install | start [--port N] | stop | status | run -- CMD ...
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${STREAMKIT_SCRIPT_PYTHON:-}
if [ -z "$python" ]; then
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
    done
fi
if [ -z "$python" ]; then
    echo "real-server: no python3 on PATH" >&2
    exit 3
fi
exec "$python" "$here/real_server.py" "$@"
