#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation on the
# STABLE toolchain (no nightly, no cargo-fuzz: plain `cargo build` with
# SanitizerCoverage flags, see rustc-wrapper.sh) and runs each over its
# corpus. docs/FUZZING.md says what each target covers.
#
#   bash fuzz/run.sh                      # every target, 20 s each
#   bash fuzz/run.sh --seconds 3600       # the long campaign
#   bash fuzz/run.sh --target raft_rpc --seconds 600 --merge
#   bash fuzz/run.sh --seed               # (re)write the seed corpora
#   bash fuzz/run.sh --check              # rustfmt + clippy -D warnings only
#
# Options:
#   --seconds N   fuzzing time per target (default 20)
#   --target T    only T (repeatable); default: every target
#   --merge       merge the new interesting inputs into fuzz/corpus/<T>
#                 (minimizing merge); without it the committed corpus is
#                 only read
#   --seed        write each target's seeds (valid encodings built through
#                 the crates' APIs) into fuzz/corpus/<T>, then stop
#   --check       only check formatting and clippy (-D warnings)
#   --no-check    skip the formatting and clippy checks
#   -- ARGS       extra libFuzzer flags, e.g. -- -jobs=2 -workers=2
#
# Exits non-zero if a target fails to build, crashes (the input is kept
# under fuzz/artifacts/<T>/), times out, exceeds its memory limit, or runs
# without seeing any coverage (an uninstrumented build).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

ALL_TARGETS=(merkle_node merkle_tree_walk raft_rpc raft_snapshot p2p_join ctl chunk_stream)
seconds=20
targets=()
merge=0
seed=0
check=1
only_check=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --target) targets+=("$2"); shift 2 ;;
    --merge) merge=1; shift ;;
    --seed) seed=1; shift ;;
    --check) only_check=1; shift ;;
    --no-check) check=0; shift ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || { echo "run.sh: no target $t" >&2; exit 2; }
done

log() { printf '\n--- fuzz: %s ---\n' "$*"; }

if [ "$check" = 1 ]; then
  log "rustfmt --check"
  rustfmt --edition 2021 --check src/*.rs fuzz_targets/*.rs
fi

host="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$here/target}"
# SanitizerCoverage as libFuzzer wants it (what cargo-fuzz passes, minus
# its nightly-only sanitizer flags): 8-bit counters per edge, the PC table,
# and comparison tracing so the mutator learns the constants compared
# against. All stable codegen options.
export FUZZ_RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares"
# The crates instrumented (rustc's --crate-name): the project's, the fuzz
# targets, and the third-party decoders they drive.
export FUZZ_INSTRUMENT="filesyncd filesyncd_merkle filesyncd_raft filesyncd_p2p \
filesyncd_chunkstore filesyncd_fuzz ${ALL_TARGETS[*]} postcard serde serde_json \
openraft multiaddr multihash unsigned_varint libp2p_identity zstd zstd_safe redb"
export RUSTC_WRAPPER="$here/rustc-wrapper.sh"
# Never a stale RUSTFLAGS: flags come from the wrapper only.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS RUSTC_BOOTSTRAP

build=(cargo build --release --locked --target "$host" --lib --bins)
if [ "$check" = 1 ]; then
  # clippy runs as the build of this crate itself (what `cargo clippy`
  # does, in build mode), so it costs no second build of the dependencies.
  log "build with clippy -D warnings"
  RUSTC_WORKSPACE_WRAPPER="$(command -v clippy-driver)" \
    CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__" \
    "${build[@]}"
else
  log "build"
  "${build[@]}"
fi
[ "$only_check" = 1 ] && exit 0

bin="$CARGO_TARGET_DIR/$host/release"

if [ "$seed" = 1 ]; then
  for t in "${targets[@]}"; do
    FILESYNCD_FUZZ_SEEDS="$here/corpus/$t" "$bin/$t"
  done
  exit 0
fi

failed=()
summary=()
for t in "${targets[@]}"; do
  corpus="$here/corpus/$t"
  work="$CARGO_TARGET_DIR/corpus-work/$t"
  artifacts="$here/artifacts/$t"
  mkdir -p "$corpus" "$work" "$artifacts"
  out="$CARGO_TARGET_DIR/fuzz-$t.log"
  log "$t: ${seconds}s over $(find "$corpus" -type f | wc -l) corpus inputs"
  status=0
  # New inputs go to the work dir (first), the committed corpus is read.
  "$bin/$t" "$work" "$corpus" \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "${extra[@]}" \
    >"$out" 2>&1 || status=$?
  grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^==[0-9]+== ERROR|panicked at|^SUMMARY|Test unit written' "$out" | tail -n 8 || true
  cov_init="$(grep -oE 'INITED cov: [0-9]+' "$out" | grep -oE '[0-9]+$' | tail -n 1 || true)"
  cov_done="$(grep -E '^#[0-9]+[[:space:]]+[A-Z]+ +cov: [0-9]+' "$out" | grep -oE 'cov: [0-9]+' | grep -oE '[0-9]+$' | tail -n 1 || true)"
  execs="$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$out" | grep -oE '[0-9]+$' || true)"
  rate="$(grep -oE 'exec/s: [0-9]+' "$out" | tail -n 1 | grep -oE '[0-9]+$' || true)"
  summary+=("$t: cov ${cov_init:-?} -> ${cov_done:-${cov_init:-?}}, ${execs:-?} runs, ${rate:-?} exec/s, exit $status")
  if [ "$status" != 0 ]; then
    failed+=("$t (exit $status; input in fuzz/artifacts/$t/, log $out)")
    tail -n 40 "$out"
  elif [ -z "$cov_init" ] || [ "${cov_done:-$cov_init}" -le 0 ]; then
    failed+=("$t (no coverage seen: is the build instrumented? log $out)")
  fi
  if [ "$merge" = 1 ] && [ "$status" = 0 ]; then
    before="$(find "$corpus" -type f | wc -l)"
    "$bin/$t" -merge=1 -timeout=20 -rss_limit_mb=2048 "$corpus" "$work" >"$out.merge" 2>&1
    echo "merged: $before -> $(find "$corpus" -type f | wc -l) inputs in fuzz/corpus/$t"
  fi
done

log "summary"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets passed"
