#!/usr/bin/env bash
# Builds the filesyncd container image on a machine whose Docker engine
# cannot pull anything: a statically linked release binary (glibc, crt-static)
# copied into FROM scratch together with /etc/nsswitch.conf.
#
#   deploy/build-image.sh               build the binary (if needed) and the image
#   deploy/build-image.sh --no-cargo    reuse the binary already built
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

for arg in "$@"; do
  case $arg in
    --no-cargo) build=0 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

host=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p' || true)
if [[ $build == 1 && $host != "$triple" ]]; then
  echo "build-image.sh: needs an $triple host toolchain (found '${host:-none}')" >&2
  exit 2
fi

bin=$target_dir/$triple/release/filesyncd
if [[ $build == 1 ]]; then
  # --target keeps build scripts and proc macros dynamic; only the binary is static.
  (cd "$repo" && CARGO_TARGET_DIR=$target_dir RUSTFLAGS='-C target-feature=+crt-static' \
     nice -n 19 cargo build --release --locked --target "$triple" -p filesyncd)
fi
[[ -x $bin ]] || { echo "build-image.sh: no binary at $bin (run without --no-cargo)" >&2; exit 1; }

# A dynamic binary would fail in FROM scratch with a confusing "no such file".
desc=$(file -L "$bin")
if ! grep -Eq 'statically linked|static-pie linked' <<<"$desc"; then
  echo "build-image.sh: $bin is not static: $desc" >&2
  exit 1
fi
if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -Eq 'statically linked|not a dynamic executable'; then
  echo "build-image.sh: ldd lists shared libraries for $bin" >&2
  exit 1
fi

ctx=$(mktemp -d /tmp/filesyncd-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/owned"
chmod 1777 "$ctx/rootfs/tmp"
chmod 0755 "$ctx/owned"
install -m 0755 -s "$bin" "$ctx/rootfs/filesyncd"
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
