#!/usr/bin/env bash
# Replays saved inputs through the instrumented harness (build-fuzz/, see
# scripts/fuzz.sh) and sorts them by where they fail: "ours" when the first
# frame past the sanitizer runtime is in src/ or fuzz/ (or a harness check
# failed), "libhdf5" when it is inside the HDF5 library, "ok" when the input no
# longer fails. One line per input: class, kind, top frame, first frame of ours.
#
#   fuzz/triage.sh HARNESS [INPUT...]    # default: every file of fuzz/crashes/HARNESS/
#
# An input still running after GPFQ_TRIAGE_TIMEOUT seconds (default 20) is a timeout.
set -uo pipefail
cd "$(dirname "$0")/.."
h=${1:?usage: fuzz/triage.sh HARNESS [INPUT...]}
shift
bin=build-fuzz/fuzz/fuzz_$h
[ -x "$bin" ] || { echo "triage: $bin is missing; run scripts/fuzz.sh first" >&2; exit 2; }
inputs=("$@")
((${#inputs[@]})) || mapfile -t inputs < <(find "fuzz/crashes/$h" -type f | sort)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/fuzz/lsan.supp}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for input in "${inputs[@]}"; do
  log=$("$bin" -timeout="${GPFQ_TRIAGE_TIMEOUT:-20}" -rss_limit_mb=2048 "$input" 2>&1)
  if [ $? -eq 0 ]; then
    printf '%-8s %-28s %s\n' ok - "$input"
    continue
  fi
  printf '%s\n' "$log" | awk -v input="$input" '
    /fuzz check failed/ && !kind { kind = "check"; cls = "ours"; top = $0; sub(/^fuzz check failed: /, "", top) }
    /ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer):/ && !kind {
      kind = $0; sub(/.*ERROR: [A-Za-z]+: /, "", kind); sub(/ on .*/, "", kind); sub(/:.*/, "", kind); sub(/ \(.*/, "", kind); kind = substr(kind, 1, 40)
    }
    /runtime error:/ && !kind { kind = "ubsan"; cls = "ours"; top = $0; sub(/^[^ ]* /, "", top) }
    /allocated by thread/ { section = "alloc" }
    /freed by thread/ { section = "freed" }
    /^ *#[0-9]+ / {
      frame = $0; sub(/^ *#[0-9]+ 0x[0-9a-f]+ +(in )?/, "", frame); sub(/ \(BuildId.*/, "", frame)
      runtime = frame ~ /^(__interceptor_|__asan|__sanitizer|__lsan|malloc|calloc|realloc|free|strdup|operator)/ ||
                frame ~ /compiler-rt|libclang_rt|libc\.so|sysdeps\/|\(\/[^ ]*\/fuzz_[a-z]+\+0x/
      if (section == "alloc") {
        if (!runtime && !alloc) alloc = frame
      } else if (section == "") {
        if (!runtime && !first) first = frame
        if (!ours && frame ~ /\/(src|fuzz)\/[^ ]*\.c:/) ours = frame
      }
    }
    END {
      if (!kind) kind = "unknown"
      # an overflow of a buffer our code allocated (too small for what it asked
      # HDF5 to read) is ours even when HDF5 does the writing
      if (!cls && kind ~ /buffer-overflow/ && alloc ~ /\/(src|fuzz)\//) {
        cls = "ours"; ours = ours " (buffer from " alloc ")"
      }
      if (!cls) cls = (first ~ /libhdf5/) ? "libhdf5" : (first ~ /\/(src|fuzz)\//) ? "ours" : "other"
      if (!top) top = first
      gsub(/\/[^ ]*\/libhdf5[^ ]*\+0x[0-9a-f]+\)/, "libhdf5)", top)
      printf "%-8s %-28s %s\n         top: %s\n         ours: %s\n", cls, kind, input, top, ours
    }'
done
