#!/usr/bin/env bash
# Starts JupyterLab from the workbench's venv: loopback only, in notebooks/, with a fresh token
# printed in a ready-to-open address. PORT (default 8888) and NO_BROWSER=1 come from the
# environment (`make lab PORT=9000 NO_BROWSER=1`), and LAB_DIR for another folder than
# notebooks/ (the browser test's); a taken port fails instead of moving on,
# so the printed address is the one that answers. Further arguments go to `jupyter lab`.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-8888}
TOKEN=${JUPYTER_TOKEN:-$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(16))')}
args=(--ServerApp.ip=127.0.0.1 --ServerApp.port="$PORT" --ServerApp.port_retries=0
      --ServerApp.root_dir="${LAB_DIR:-notebooks}" --IdentityProvider.token="$TOKEN")
if [ "${NO_BROWSER:-0}" != 0 ]; then
  args+=(--no-browser)
fi
if [ "$(id -u)" = 0 ]; then  # containers and CI machines run as root; Jupyter refuses that
  args+=(--allow-root)
fi
echo "JupyterLab (kernel \"Python 3 (SyncTalk .venv)\"), Ctrl-C to stop:"
echo "    http://127.0.0.1:$PORT/lab?token=$TOKEN"
exec .venv/bin/jupyter lab "${args[@]}" "$@"
