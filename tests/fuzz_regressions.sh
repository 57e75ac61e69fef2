#!/usr/bin/env bash
# Replays, for each fuzz harness, the inputs that once crashed it
# (fuzz/regressions/NAME/) and its seed corpus (fuzz/corpus/NAME/) through the
# harness built without libFuzzer (fuzz_replay_NAME): each must run to the end.
#
#   fuzz_regressions.sh FUZZ_DIR REPLAY_BIN_DIR
set -uo pipefail
fuzz=$1 bin=$2
failures=0
for name in model idx cifar job results; do
  log=$(mktemp)
  if "$bin/fuzz_replay_$name" "$fuzz/regressions/$name" "$fuzz/corpus/$name" >"$log" 2>&1; then
    echo "ok: $name: $(tail -1 "$log" | sed 's/.*: //')"
  else
    echo "FAIL: $name: an input crashed the harness or broke one of its checks:"
    tail -25 "$log" | sed 's/^/    /'
    failures=$((failures + 1))
  fi
  rm -f "$log"
done
exit $((failures > 0))
