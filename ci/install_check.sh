#!/usr/bin/env bash
# What a user gets from `pip install idds-jupyter` (no extras), checked from the built wheel:
#   1. a clean venv with the wheel and its base dependencies only runs
#      examples/branch_and_loop.yaml to `finished` and serves the Jupyter server extension
#      (GET /idds/api/v1/ping answers 200; the server and lab extensions are listed enabled);
#   2. a venv holding only what a batch worker node needs -- the wheel without its
#      dependencies, plus cloudpickle -- runs a real job through `python -m idds_jupyter.worker`.
# Everything lives in a temp dir (IDDS_HOME, Jupyter config/data/runtime dirs); run from any
# directory: `make install-check` or `bash ci/install_check.sh`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/idds-install-check.XXXXXX")
SERVER_PID=""
START=$SECONDS

cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
  echo "install-check: FAIL: $*" >&2
  exit 1
}
pass() { echo "install-check: PASS: $* [$((SECONDS - START)) s]"; }

# Nothing of the developer's environment leaks in: no IDDS_* settings, no source tree on
# the path, no user site-packages, Jupyter's per-user dirs in the temp dir (the venv's own
# sys-prefix config, where the wheel enables the extension, is still read).
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(IDDS_|JUPYTER_)' || true)
unset PYTHONPATH VIRTUAL_ENV
export PYTHONNOUSERSITE=1
export IDDS_HOME="$WORK/idds-home"
export JUPYTER_CONFIG_DIR="$WORK/jupyter/config"
export JUPYTER_DATA_DIR="$WORK/jupyter/data"
export JUPYTER_RUNTIME_DIR="$WORK/jupyter/runtime"
export JUPYTER_PLATFORM_DIRS=1
cd "$WORK"  # never import the checkout's idds_jupyter by accident

# -- the wheel (the labextension is already built: the jupyter-builder hook skips npm) ------
"$PY" -m pip wheel -q --no-deps "$ROOT" -w "$WORK/dist" >"$WORK/wheel.log" 2>&1 \
  || { cat "$WORK/wheel.log"; fail "building the wheel"; }
WHEEL=$(ls "$WORK"/dist/idds_jupyter-*.whl)
CONTENTS=$("$PY" -m zipfile -l "$WHEEL")
for f in share/jupyter/labextensions/idds-jupyter/static/style.js \
         etc/jupyter/jupyter_server_config.d/idds_jupyter_server.json \
         share/jupyter/kernels/idds/kernel.json dist-info/licenses/LICENSE; do
  grep -q -- "$f" <<<"$CONTENTS" || fail "the wheel lacks $f"
done
pass "wheel $(basename "$WHEEL") built, with the labextension, server config, kernelspec and LICENSE"

BASE_PY=$("$PY" -c 'import sys; print(sys._base_executable)')
# the worker node's venv (part 2) is made meanwhile: the wheel without its dependencies,
# plus cloudpickle (idds_jupyter.worker imports the standard library and cloudpickle only)
# (the venvs get no pip of their own: the project's pip installs into them with --python)
pip_into() { local venv=$1; shift; "$PY" -m pip --python "$venv/bin/python" install -q --no-compile "$@"; }
{ "$BASE_PY" -m venv --without-pip "$WORK/worker" && pip_into "$WORK/worker" --no-deps "$WHEEL" \
  && pip_into "$WORK/worker" cloudpickle; } >"$WORK/pip-worker.log" 2>&1 &
WORKER_VENV_PID=$!

# -- 1. a base install: the wheel, no extras --------------------------------------------------
"$BASE_PY" -m venv --without-pip "$WORK/base"
pip_into "$WORK/base" "$WHEEL" >"$WORK/pip-base.log" 2>&1 \
  || { cat "$WORK/pip-base.log"; fail "pip install of the wheel (no extras)"; }
OPTIONAL=$("$WORK/base/bin/python" -c 'import importlib.util as u
print(" ".join(m for m in "optuna torch dask distributed psycopg htcondor2 pandaclient sklearn pandas".split()
               if u.find_spec(m)))')
[[ -z "$OPTIONAL" ]] || fail "the base install holds optional packages ($OPTIONAL): a dependency pulled them in"
pass "base install (no extras): none of optuna, torch, dask, psycopg, htcondor2, pandaclient, sklearn, pandas"

# its commands run examples/steps.py from the current directory: a copy, so that nothing
# (a worker started with -m) imports the checkout instead of the wheel
mkdir -p "$WORK/examples"
cp "$ROOT/examples/branch_and_loop.yaml" "$ROOT/examples/steps.py" "$WORK/examples/"
RUN_OUT=$("$WORK/base/bin/idds-jupyter" run -q examples/branch_and_loop.yaml 2>&1) \
  || { echo "$RUN_OUT"; fail "idds-jupyter run examples/branch_and_loop.yaml"; }
grep -Eq "^workflow [0-9]+ 'branch-and-loop': finished$" <<<"$RUN_OUT" \
  || { echo "$RUN_OUT"; fail "examples/branch_and_loop.yaml did not finish"; }
pass "idds-jupyter run examples/branch_and_loop.yaml: $(head -n 1 <<<"$(grep "^workflow" <<<"$RUN_OUT")")"

EXT_LIST=$("$WORK/base/bin/jupyter" server extension list 2>&1 | sed 's/\x1b\[[0-9;]*m//g')
echo "$EXT_LIST" | sed 's/^/    /'
grep -Eq "idds_jupyter_server enabled" <<<"$EXT_LIST" || fail "server extension not enabled"
grep -Eq "idds_jupyter_server +OK" <<<"$EXT_LIST" || fail "server extension does not validate"
pass "jupyter server extension list: idds_jupyter_server enabled, OK"

LAB_LIST=$("$WORK/base/bin/jupyter" labextension list 2>&1 | sed 's/\x1b\[[0-9;]*m//g')
echo "$LAB_LIST" | sed 's/^/    /'
grep -Eq "idds-jupyter v[0-9.]+ .*enabled.*OK" <<<"$LAB_LIST" || fail "labextension not enabled/OK"
pass "jupyter labextension list: idds-jupyter enabled, OK"

PORT=$("$WORK/base/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
TOKEN=$("$WORK/base/bin/python" -c 'import secrets; print(secrets.token_hex(16))')
ROOT_FLAG=()
[[ $(id -u) == 0 ]] && ROOT_FLAG=(--allow-root)
"$WORK/base/bin/jupyter" server "${ROOT_FLAG[@]}" --no-browser --ip 127.0.0.1 --port "$PORT" \
  --IdentityProvider.token="$TOKEN" --ServerApp.root_dir="$WORK" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
CODE=$("$WORK/base/bin/python" - "$PORT" "$TOKEN" <<'EOF'
import sys, time, urllib.error, urllib.request

port, token = sys.argv[1], sys.argv[2]
req = urllib.request.Request(f"http://127.0.0.1:{port}/idds/api/v1/ping",
                             headers={"Authorization": f"token {token}"})
deadline, code = time.monotonic() + 90, "no answer"
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            code = r.status
            break
    except urllib.error.HTTPError as e:
        code = e.code
        if e.code != 404:  # 404: the server is up but the extension not (yet) loaded
            break
    except OSError:
        pass
    time.sleep(0.3)
print(code)
EOF
)
if grep -q "extension failed loading" "$WORK/server.log" || [[ "$CODE" != 200 ]]; then
  cat "$WORK/server.log"
  fail "GET /idds/api/v1/ping answered $CODE"
fi
pass "jupyter server with the extension: GET /idds/api/v1/ping -> 200"
kill "$SERVER_PID" && wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""

# -- 2. a batch worker node: the wheel without its dependencies, plus cloudpickle -------------
wait "$WORKER_VENV_PID" || { cat "$WORK/pip-worker.log"; fail "pip install of the worker venv"; }
WORKER_PKGS=$("$PY" -m pip --python "$WORK/worker/bin/python" list --format=freeze 2>/dev/null | tr '\n' ' ')
# the job, as a notebook would send it: a function pickled by value with its arguments
mkdir -p "$WORK/job/results" "$WORK/job/logs"
"$WORK/base/bin/python" - "$WORK/job" <<'EOF'
import hashlib, json, os, sys

import cloudpickle

job = sys.argv[1]

def area(w, h, unit="m"):
    import platform
    return {"area": w * h, "unit": unit, "python": platform.python_version()}

blob = cloudpickle.dumps((area, (3,), {"h": 4}))
sha = hashlib.sha256(blob).hexdigest()
with open(os.path.join(job, sha), "wb") as f:
    f.write(blob)
spec = {"job_id": 1, "attempt": 0, "work_id": 1, "workflow_id": 1, "kind": "function",
        "function": None, "command": None, "kwargs": {"unit": "cm"},
        "payload": {"sha256": sha, "path": os.path.join(job, sha)},
        "result_dir": os.path.join(job, "results"), "env": {}, "timeout_s": 60,
        "log_dir": os.path.join(job, "logs"), "cwd": job}
with open(os.path.join(job, "spec.json"), "w") as f:
    json.dump(spec, f)
EOF
"$WORK/worker/bin/python" -m idds_jupyter.worker --job "$WORK/job/spec.json" --out "$WORK/job/result.json" \
  >"$WORK/job/stdout" 2>"$WORK/job/stderr" || { cat "$WORK/job/stderr" "$WORK/job/stdout"; fail "the worker's job"; }
"$WORK/worker/bin/python" - "$WORK/job/result.json" <<'EOF' || fail "the worker's result"
import json, sys

res = json.load(open(sys.argv[1]))
assert res["ok"] and res["result"]["area"] == 12 and res["result"]["unit"] == "cm", res
for heavy in ("sqlalchemy", "jupyter_server", "tornado", "zmq", "yaml"):
    try:
        __import__(heavy)
    except ImportError:
        continue
    sys.exit(f"the worker venv holds {heavy}")
EOF
pass "python -m idds_jupyter.worker --job in a venv of only: ${WORKER_PKGS% } -> ok, result {area: 12}"

pass "install check done"
