"""Root mode of the sandbox: drop root *before* bubblewrap runs, so the kernel never runs as real root.

When the grader runs as root (a container, sudo), bwrap would map the kernel's uid to real root.
Instead this script (standard library only, run as ``python -I -S stage.py SPEC_JSON``):

1. enters a private mount namespace and bind-mounts the paths that an unprivileged user could not
   reach (e.g. a Python below ``/root``, the grader's private temporary folders) to staging folders
   that it can reach; these mounts exist only in this namespace and disappear with it;
2. switches to the dedicated unprivileged uid/gid (no supplementary groups);
3. execs bwrap, which then builds the sandbox without privileges, as for any other user.
"""

import ctypes
import json
import os
import sys

CLONE_NEWNS = 0x00020000
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18


def main() -> None:
    spec = json.loads(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            sys.exit(f"stage: {what} failed: {os.strerror(ctypes.get_errno())}")

    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "making / private")
    for src, dst in spec["binds"]:
        check(libc.mount(src.encode(), dst.encode(), None, MS_BIND | MS_REC, None), f"bind {src}")
    uid = int(spec["uid"])
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        sys.exit("stage: could not drop root")
    libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG = SIGKILL again (changing the uid cleared it)
    os.execv(spec["argv"][0], spec["argv"])


if __name__ == "__main__":
    main()
