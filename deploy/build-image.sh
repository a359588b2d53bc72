#!/usr/bin/env bash
# Builds the filesyncd container image on a machine whose Docker engine
# cannot pull anything: a statically linked release binary (glibc, crt-static)
# copied into FROM scratch together with /etc/nsswitch.conf.
#
#   deploy/build-image.sh               build the binary (if needed) and the image
#   deploy/build-image.sh --no-cargo    reuse the binary already built
#   deploy/build-image.sh --bin FILE    no cargo: an image of FILE, which may be
#                                       dynamically linked (e.g. target/debug/
#                                       filesyncd, seconds instead of a release
#                                       build): the shared libraries `ldd` lists
#                                       and the dynamic loader go into the image
#                                       at the same absolute paths; debug info
#                                       is stripped, the symbol table kept
#
# Environment: FSD_IMAGE (tag, default filesyncd:local), CARGO_TARGET_DIR
# (default <repo>/target-static, kept apart from the dynamic build so the two
# never rebuild each other). The build runs under `nice -n 19`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
tag=${FSD_IMAGE:-filesyncd:local}
target_dir=${CARGO_TARGET_DIR:-$repo/target-static}
triple=x86_64-unknown-linux-gnu
build=1
given=

while (($#)); do
  case $1 in
    --no-cargo) build=0 ;;
    --bin) [[ -n ${2:-} ]] || { echo "build-image.sh: --bin needs a file" >&2; exit 2; }
           given=$2; build=0; shift ;;
    --bin=*) given=${1#--bin=}; build=0 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

host=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p' || true)
if [[ $build == 1 && $host != "$triple" ]]; then
  echo "build-image.sh: needs an $triple host toolchain (found '${host:-none}')" >&2
  exit 2
fi

if [[ -n $given ]]; then
  bin=$given
  [[ -f $bin && -x $bin ]] || { echo "build-image.sh: --bin $bin: no such executable" >&2; exit 1; }
else
  bin=$target_dir/$triple/release/filesyncd
fi
if [[ $build == 1 ]]; then
  # --target keeps build scripts and proc macros dynamic; only the binary is static.
  (cd "$repo" && CARGO_TARGET_DIR=$target_dir RUSTFLAGS='-C target-feature=+crt-static' \
     nice -n 19 cargo build --release --locked --target "$triple" -p filesyncd)
fi
[[ -x $bin ]] || { echo "build-image.sh: no binary at $bin (run without --no-cargo)" >&2; exit 1; }

desc=$(file -L "$bin")
grep -q 'ELF' <<<"$desc" || { echo "build-image.sh: $bin is not an ELF executable: $desc" >&2; exit 1; }
static=0
if grep -Eq 'statically linked|static-pie linked' <<<"$desc"; then static=1; fi
if [[ -z $given ]]; then
  # A dynamic binary would fail in FROM scratch with a confusing "no such file".
  if ((!static)); then
    echo "build-image.sh: $bin is not static: $desc (an image of it: --bin $bin)" >&2
    exit 1
  fi
  if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -Eq 'statically linked|not a dynamic executable'; then
    echo "build-image.sh: ldd lists shared libraries for $bin" >&2
    exit 1
  fi
fi

ctx=$(mktemp -d /tmp/filesyncd-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/owned"
chmod 1777 "$ctx/rootfs/tmp"
chmod 0755 "$ctx/owned"
if [[ -z $given ]]; then
  install -m 0755 -s "$bin" "$ctx/rootfs/filesyncd"
else
  # Debug info off (a debug build carries hundreds of MB of it), symbols
  # kept: a panic's backtrace still names its functions.
  if command -v strip >/dev/null 2>&1; then
    strip --strip-debug -o "$ctx/rootfs/filesyncd" "$bin"
    chmod 0755 "$ctx/rootfs/filesyncd"
  else
    install -m 0755 "$bin" "$ctx/rootfs/filesyncd"
  fi
  if ((!static)); then
    # Every shared library the loader maps ("name => /path (addr)") and the
    # loader itself ("/lib64/ld-linux-x86-64.so.2 (addr)"), each at the path
    # ldd prints: the binary's PT_INTERP and the loader's search find them
    # there. The vDSO has no file. A library ldd cannot find fails the build.
    command -v ldd >/dev/null 2>&1 || { echo "build-image.sh: ldd not installed (libc-bin)" >&2; exit 1; }
    libs=$(ldd "$bin") || { echo "build-image.sh: ldd $bin failed" >&2; exit 1; }
    if grep -q 'not found' <<<"$libs"; then
      echo "build-image.sh: missing shared libraries for $bin:" >&2
      grep 'not found' <<<"$libs" >&2
      exit 1
    fi
    interp=$(readelf -l "$bin" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p' || true)
    paths=()
    while read -r lib; do
      [[ $lib == /* ]] && paths+=("$lib")
    done < <(awk '$2 == "=>" { print $3; next } $1 ~ /^\// { print $1 }' <<<"$libs")
    [[ -z $interp ]] || paths+=("$interp")
    ((${#paths[@]})) || { echo "build-image.sh: ldd lists no library for a dynamic $bin" >&2; exit 1; }
    for lib in $(printf '%s\n' "${paths[@]}" | sort -u); do
      mkdir -p "$ctx/rootfs$(dirname "$lib")"
      # -L: the file itself, not a symlink into a tree the image lacks.
      cp -L "$lib" "$ctx/rootfs$lib"
      chmod 0755 "$ctx/rootfs$lib"
      echo "build-image.sh: + $lib"
    done
  fi
fi
install -m 0644 "$here/image/nsswitch.conf" "$ctx/rootfs/etc/nsswitch.conf"
printf 'root:x:0:0:root:/:/nonexistent\nfilesyncd:x:65532:65532:filesyncd:/data:/nonexistent\n' >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nfilesyncd:x:65532:\n' >"$ctx/rootfs/etc/group"
chmod 0644 "$ctx/rootfs/etc/passwd" "$ctx/rootfs/etc/group"
cp "$here/image/Dockerfile.scratch" "$ctx/Dockerfile"

# The classic builder needs nothing from a registry for FROM scratch; the
# Debian docker CLI has no buildx, so ask for the classic builder explicitly.
DOCKER_BUILDKIT=0 docker build --label "org.opencontainers.image.revision=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  -t "$tag" "$ctx"
docker image inspect "$tag" --format '{{.Id}} {{.Size}} bytes' | sed "s|^|$tag |"
if [[ -n $given ]]; then
  # The image must run what it was built from: loader and libraries found.
  if ! out=$(docker run --rm --network none --entrypoint /filesyncd "$tag" --version 2>&1); then
    echo "build-image.sh: $tag does not run /filesyncd --version:" >&2
    echo "$out" >&2
    exit 1
  fi
  echo "$tag runs: $out"
fi
