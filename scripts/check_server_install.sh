#!/usr/bin/env bash
# Server-only install, shown end to end (issue 10, "Installs and the SDK"):
#
#   1. a clean tree of the committed code (`git archive HEAD`, i.e. what a fresh clone holds),
#      its gRPC stubs generated with this checkout's grpc_tools (as `make proto` does);
#   2. a fresh venv and a normal `pip install "<tree>[server]"` from the package registry;
#   3. fails if torch, dlib, matplotlib (or any other client-only package) got installed;
#   4. `pura serve --help`, `pura keygen`, `pura certs`, then servers B and A as real processes
#      (mTLS, A connected to B) until both report their port, then SIGTERM;
#   5. `pura demo` refuses with a message naming the client extra;
#   6. `python -X importtime -c "import pura.service.run"`: fails if torch, dlib or matplotlib
#      is imported (they are not even installed, so an import would already have crashed
#      step 4; the import-time listing is printed as evidence of what a server does load).
#
# Usage: scripts/check_server_install.sh [WORKDIR]   (default: a new temporary directory)
# Needs network access to the package index. Prints PASS at the end; exits non-zero on failure.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d -t pura-server-install.XXXXXX)}
HOST_PY=${HOST_PY:-$ROOT/.venv/bin/python}
BASE_PY=${PY:-python3}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
echo "workdir: $WORK"

# 1. clean tree + stubs
rm -rf "$WORK/src" && mkdir -p "$WORK/src"
git -C "$ROOT" archive HEAD | tar -x -C "$WORK/src"
"$HOST_PY" "$WORK/src/scripts/gen_protos.py"

# 2. fresh venv, server extra
"$BASE_PY" -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
"$VPY" -m pip install --quiet --upgrade pip
start=$(date +%s)
"$VPY" -m pip install --quiet "$WORK/src[server]"
echo "pip install .[server]: $(( $(date +%s) - start )) s"
"$VPY" -m pip list --format=freeze > "$WORK/installed.txt"
echo "installed: $(wc -l < "$WORK/installed.txt") distributions"

# 3. nothing of the client
for forbidden in torch dlib dlib-bin matplotlib face-recognition-models onnx scipy pillow \
    faiss-cpu ray; do
  if grep -qi "^${forbidden}==" "$WORK/installed.txt"; then
    echo "FAIL: the server install pulled $forbidden"; exit 1
  fi
done
echo "no torch, dlib, matplotlib, onnx, scipy, pillow, faiss or ray installed"

# 4. the server commands, for real
BIN=$WORK/venv/bin
"$BIN/pura" serve --help > /dev/null && echo "pura serve --help: ok"
"$BIN/pura" keygen --out "$WORK/keys" --profile "${PURA_KEY_PROFILE:-fast}"
"$BIN/pura" certs --out "$WORK/tls" > /dev/null && echo "pura certs: ok"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() {  # file, pid, name
  for _ in $(seq 1 300); do
    if [ -s "$1" ]; then echo "$3 serving on port $(cat "$1")"; return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then echo "FAIL: $3 exited"; tail -20 "$WORK/$3.log"; exit 1; fi
    sleep 0.2
  done
  echo "FAIL: $3 did not start"; tail -20 "$WORK/$3.log"; exit 1
}
"$BIN/pura" serve --role b --keys "$WORK/keys/b" --tls "$WORK/tls" --data "$WORK/b-data" \
  --ready-file "$WORK/b.port" > "$WORK/b.log" 2>&1 &
pids+=($!)
wait_port "$WORK/b.port" "${pids[0]}" b
"$BIN/pura" serve --role a --keys "$WORK/keys/a" --tls "$WORK/tls" --data "$WORK/a-data" \
  --insecure-shared-host --peer "localhost:$(cat "$WORK/b.port")" --ready-file "$WORK/a.port" > "$WORK/a.log" 2>&1 &
pids+=($!)
wait_port "$WORK/a.port" "${pids[1]}" a
for p in "${pids[@]}"; do kill -TERM "$p"; wait "$p" || true; done
pids=()

# `pura demo` plays the client too: on a server-only install it must say what to install
if "$BIN/pura" demo --workdir "$WORK/demo" > "$WORK/demo.log" 2>&1; then
  echo "FAIL: pura demo ran without the client extra"; exit 1
fi
grep -q '"client" extra' "$WORK/demo.log" && echo "pura demo without the client extra: refused, names the extra"

# 6. what a server imports -- from $WORK, so that `python -c` (whose sys.path starts with the
# current directory) sees the installed package, not a checkout it happens to be run from
cd "$WORK"
"$VPY" -X importtime -c "
import sys
import pura.service.run, pura.cli
assert pura.service.run.__file__.startswith('$WORK/venv/'), pura.service.run.__file__
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'dlib', 'matplotlib'))
assert not heavy, heavy
print('modules loaded by pura.service.run + pura.cli:', len(sys.modules), '; torch/dlib/matplotlib: none')
" 2> "$WORK/importtime.txt"
echo "import-time listing: $WORK/importtime.txt ($(wc -l < "$WORK/importtime.txt") lines)"
if grep -Eq "\| +(torch|dlib|matplotlib)(\.|$)" "$WORK/importtime.txt"; then
  echo "FAIL: importtime lists a client-only module"; exit 1
fi
echo PASS
