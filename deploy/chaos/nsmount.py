#!/usr/bin/env python3
"""Mount or unmount a tmpfs inside another process's mount namespace.

  nsmount.py PID mount PATH [OPTIONS]   e.g. nsmount.py 1234 mount /sync size=16m,mode=0755
  nsmount.py PID umount PATH

Used by disk.sh on compose nodes: the image is FROM scratch, so there is no
mount binary inside the container to nsenter into. setns(2) on the mount
namespace needs a single-threaded caller, which this script is. Root only.
"""

import ctypes
import ctypes.util
import os
import sys

CLONE_NEWNS = 0x00020000
MNT_DETACH = 2


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[2] not in ("mount", "umount"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    pid, op, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    opts = sys.argv[4] if len(sys.argv) > 4 else "size=16m,mode=0755"
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNS) != 0:
        e = ctypes.get_errno()
        print(f"setns: {os.strerror(e)}", file=sys.stderr)
        return 1
    os.close(fd)
    if op == "mount":
        r = libc.mount(b"fsd-chaos", path.encode(), b"tmpfs", 0, opts.encode())
    else:
        r = libc.umount2(path.encode(), MNT_DETACH)
    if r != 0:
        e = ctypes.get_errno()
        print(f"{op} {path}: {os.strerror(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
