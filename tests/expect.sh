# Shared helpers of the shell tests (source it): `expect` and `check` count
# failures in $failures; `expect` keeps the command's output in $out.

failures=${failures:-0}

# expect CODE PATTERN -- command...: runs it, checks the exit code and that
# stdout+stderr matches the extended regex PATTERN; the output is kept in $out.
out=
expect() {
  local code=$1 pattern=$2
  shift 3
  local rc
  out=$("$@" 2>&1)
  rc=$?
  if [ "$rc" -ne "$code" ] || ! grep -Eq -- "$pattern" <<<"$out"; then
    echo "FAIL: $* -> exit $rc (want $code), output:"
    sed 's/^/    /' <<<"$out"
    echo "    (wanted /$pattern/)"
    failures=$((failures + 1))
  else
    echo "ok: $*"
  fi
}

# check DESCRIPTION COMMAND...: counts a failure unless COMMAND succeeds
check() {
  local what=$1
  shift
  if "$@"; then
    echo "ok: $what"
  else
    echo "FAIL: $what"
    failures=$((failures + 1))
  fi
}
