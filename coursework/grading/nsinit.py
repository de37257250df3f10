"""Build the kernel's private view of the file system, then exec the kernel without any privilege.

Runs as PID 1 of fresh user, mount, PID and network namespaces created by ``unshare`` (Linux), as the
namespace's root (the grader's own user outside). It:

1. builds a new root file system on an empty tmpfs holding **only** what a kernel needs, each
   bind-mounted read-only at its usual path: the system folders (``/usr``, ``/bin``, ``/lib*``), a
   few files of ``/etc``, the Python installation and virtual environment, and the installed course
   library (``regedu``); plus a fresh ``/proc``, a small private ``/tmp``, and, writable, the
   submission's work folder and the kernel's socket folder;
2. ``pivot_root``s into it and detaches the old root: the course and its hidden tests, the grader,
   the gradebook, other submissions, the home folder, everything else simply does not exist here;
3. drops every capability (bounding, inheritable, ambient sets) and sets ``no_new_privs``, so the
   submission cannot mount, unmount or remount anything, then execs the kernel.

Nothing outside the namespaces is visible to the kernel's processes (PID namespace): they cannot
signal the grader or other kernels, and all of them end when the kernel (PID 1) ends. Without a
network interface the kernel has no network; it talks to the grader through Unix sockets.

Usage: ``unshare ... -- python -I -S nsinit.py SPEC_JSON`` (see :mod:`coursework.grading.kernel`).
Only the standard library is used (this runs before anything of the submission).
"""

import json
import os
import subprocess
import sys


def run(*cmd: str) -> None:
    r = subprocess.run(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"nsinit: {' '.join(cmd)} failed: {r.stderr.strip()}")


def graft(path: str, root: str, writable: bool = False) -> None:
    """Make ``path`` appear at the same place under ``root`` (symlinks are copied as symlinks)."""
    target = root + path
    if os.path.islink(path):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.lexists(target):
            os.symlink(os.readlink(path), target)
        return
    if os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
    elif os.path.isfile(path):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    else:
        return
    run("mount", "--bind" if writable else "--rbind", path, target)
    if not writable:
        run("mount", "-o", "remount,bind,ro", target)


def main() -> None:
    spec = json.loads(sys.argv[1])
    root = spec["root"]
    run("mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", root)
    # read-only paths below /tmp (e.g. a course cloned to /tmp) go on top of the private /tmp, so they
    # are grafted after it; everything else before (/dev must exist before /dev/shm is mounted)
    below_tmp = [p for p in spec["readonly"] if os.path.abspath(p).startswith("/tmp/")]
    for p in spec["readonly"]:
        if p not in below_tmp:
            graft(p, root)
    for d in ("proc", "tmp", "dev/shm", "oldroot"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    run("mount", "-t", "proc", "proc", os.path.join(root, "proc"))
    run("mount", "-t", "tmpfs", "-o", "size=256m,mode=1777", "tmpfs", os.path.join(root, "tmp"))
    run("mount", "-t", "tmpfs", "-o", "size=256m,mode=1777", "tmpfs", os.path.join(root, "dev/shm"))
    for p in below_tmp:
        graft(p, root)
    for p in spec["writable"]:  # last: they may lie below /tmp
        graft(p, root, writable=True)
    run("pivot_root", root, os.path.join(root, "oldroot"))
    os.chdir("/")
    run("umount", "-l", "/oldroot")
    os.rmdir("/oldroot")
    run("mount", "-o", "remount,bind,ro", "/")
    os.chdir(spec["cwd"])
    cmd = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs", "--", *spec["cmd"]]
    os.execvpe(cmd[0], cmd, spec["env"])


if __name__ == "__main__":
    main()
