#!/usr/bin/env bash
# RUSTC_WRAPPER of the fuzz build (run.sh): adds libFuzzer's coverage
# instrumentation (SanitizerCoverage, on the stable toolchain) to the crates
# the targets exercise, and to nothing else. Instrumenting the Tokio runtime
# or the QUIC stack would only add noise (scheduling looks like new
# coverage) and build time.
#
# Build scripts and proc macros are compiled for the host without
# `--target`: they are never instrumented.
set -euo pipefail
rustc="$1"
shift
crate=""
target=0
prev=""
for a in "$@"; do
  case "$prev" in
    --crate-name) crate="$a" ;;
  esac
  case "$a" in
    --target | --target=*) target=1 ;;
  esac
  prev="$a"
done
if [ "$target" = 1 ] && [ -n "$crate" ] && [[ " ${FUZZ_INSTRUMENT:-} " == *" $crate "* ]]; then
  # shellcheck disable=SC2086 # FUZZ_RUSTFLAGS is a list of flags
  exec "$rustc" "$@" ${FUZZ_RUSTFLAGS:-}
fi
exec "$rustc" "$@"
