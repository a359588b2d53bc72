#!/usr/bin/env bash
# Disk faults on one node.
#
#   disk.sh fill i         fill the file system that holds node i's synced
#                          dir until it has no free byte (netns only: the dir
#                          sits on its own tmpfs, FSD_DIR_SIZE; the ballast
#                          file lies beside the dir, so it is never synced)
#   disk.sh empty-root i   mount an empty tmpfs over node i's synced dir while
#                          the node runs: what an unmounted NAS disk looks like
#                          (compose too: mounted inside the container by
#                          nsmount.py). Combine with `proc.sh crash i` for the
#                          "booted without its disk" case.
#   disk.sh fill-data i    fill the file system of node i's data dir (chunk
#                          store, Raft log, index: its own tmpfs, FSD_DATA_SIZE)
#                          the same way; the daemon may exit on it (a Raft
#                          storage error): the heal frees the space, proc.sh
#                          restart brings it back
#   disk.sh heal [i|all]   delete the ballast (both file systems), unmount the
#                          empty root
#   disk.sh state i        one line: "free=B ballast=0|1 empty_root=0|1
#                          data_free=B data_ballast=0|1" (netns; what the
#                          suite reads to confirm a fault is in place)
#   disk.sh show
#
# disk.sh never writes ballast to a file system that is not a tmpfs it
# mounted for the node, so it cannot fill the host's disk.
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
need_root

fs_of() { echo "$FSD_STATE/n$1/fs"; }
dfs_of() { echo "$FSD_STATE/n$1/dfs"; }

free_of() { df --output=avail -B1 "$1" 2>/dev/null | tail -n1 | tr -d ' '; }

# fill_fs i FS WHAT: ballast in FS (a tmpfs netns.sh mounted) until ENOSPC.
fill_fs() {
  local i=$1 fs=$2 what=$3
  [[ $FSD_TARGET == netns ]] || usage_die "fill works on netns nodes only (a compose volume lives on the host's disk)"
  [[ $(findmnt -n -o FSTYPE --target "$fs" 2>/dev/null) == tmpfs ]] && mountpoint -q "$fs" \
    || die "$fs is not the node's own tmpfs (netns.sh up mounts it); refusing to fill it"
  # Large blocks first, then small ones for the tail; ENOSPC ends each.
  dd if=/dev/zero of="$fs/ballast" bs=1M status=none 2>/dev/null || true
  dd if=/dev/zero of="$fs/ballast2" bs=4k status=none 2>/dev/null || true
  echo "disk: node $i $what full ($(free_of "$fs") bytes free)"
}

fill() { fill_fs "$1" "$(fs_of "$1")" "synced dir"; }
fill_data() { fill_fs "$1" "$(dfs_of "$1")" "data dir"; }

state() {
  local i=$1 fs dfs
  fs=$(fs_of "$i"); dfs=$(dfs_of "$i")
  echo "free=$(free_of "$fs") ballast=$([[ -f $fs/ballast ]] && echo 1 || echo 0)" \
    "empty_root=$([[ $(findmnt -n -o SOURCE "$fs/dir" 2>/dev/null) == fsd-empty-root ]] && echo 1 || echo 0)" \
    "data_free=$(free_of "$dfs") data_ballast=$([[ -f $dfs/ballast ]] && echo 1 || echo 0)"
}

empty_root() {
  local i=$1
  if [[ $FSD_TARGET == compose ]]; then
    local p; p=$(fsd_pid "$i"); [[ -n $p ]] || die "node$i is not running"
    if ! grep -q ' /sync tmpfs ' "/proc/$p/mounts"; then
      python3 "$FSD_CHAOS_DIR/nsmount.py" "$p" mount /sync "size=16m,mode=0755,uid=65532,gid=65532"
    fi
  else
    local d; d=$(fs_of "$i")/dir
    [[ $(findmnt -n -o FSTYPE "$d" 2>/dev/null) == tmpfs ]] \
      || mount -t tmpfs -o size=16m,mode=0755 fsd-empty-root "$d"
  fi
  echo "disk: node $i root replaced by an empty mount"
}

heal_one() {
  local i=$1
  if [[ $FSD_TARGET == compose ]]; then
    local p; p=$(fsd_pid "$i")
    if [[ -n $p ]] && grep -q '^fsd-chaos /sync tmpfs ' "/proc/$p/mounts"; then
      python3 "$FSD_CHAOS_DIR/nsmount.py" "$p" umount /sync
    fi
  else
    local fs d dfs; fs=$(fs_of "$i"); d=$fs/dir; dfs=$(dfs_of "$i")
    while [[ $(findmnt -n -o SOURCE "$d" 2>/dev/null) == fsd-empty-root ]]; do umount "$d"; done
    rm -f "$fs/ballast" "$fs/ballast2" "$dfs/ballast" "$dfs/ballast2"
  fi
}

show() {
  local i
  for i in $(fsd_nodes); do
    if [[ $FSD_TARGET == compose ]]; then
      local p; p=$(fsd_pid "$i")
      echo "node $i: $( [[ -n $p ]] && grep -q '^fsd-chaos /sync ' "/proc/$p/mounts" && echo empty-root || echo normal)"
    else
      local fs; fs=$(fs_of "$i")
      echo "node $i: free $(free_of "$fs") bytes$( [[ -f $fs/ballast ]] && echo ', ballast')$( [[ -f $(dfs_of "$i")/ballast ]] && echo ', data dir full')$( [[ $(findmnt -n -o SOURCE "$fs/dir" 2>/dev/null) == fsd-empty-root ]] && echo ', empty-root')"
    fi
  done
}

case ${1:-} in
  fill) check_index "${2:?}"; fill "$2" ;;
  fill-data) check_index "${2:?}"; fill_data "$2" ;;
  state) check_index "${2:?}"; state "$2" ;;
  empty-root) check_index "${2:?}"; empty_root "$2" ;;
  heal)
    if [[ ${2:-all} == all ]]; then for i in $(fsd_nodes); do heal_one "$i"; done
    else check_index "$2"; heal_one "$2"; fi
    echo "disk: healed ${2:-all}" ;;
  show) show ;;
  *) sed -n '2,26p' "$0"; exit 2 ;;
esac
