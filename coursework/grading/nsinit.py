"""Set up the kernel's private view of the system, then exec the kernel without any privilege.

Runs as PID 1 of fresh user, mount, PID and network namespaces created by ``unshare`` (Linux), as the
namespace's root (which is the grader's own user outside). It:

1. keeps the submission's work folder (and the kernel's socket folder) writable by bind-mounting
   them onto themselves;
2. remounts every other mount read-only: the course, the grader, the gradebook, the virtual
   environment, the home folder, ``/tmp``;
3. covers the folders that must stay invisible (the course's ``coursework/`` folder with the
   sources and hidden tests, the gradebook folder) with empty read-only tmpfs mounts;
4. drops every capability (bounding, inheritable, ambient sets) and sets no_new_privs, so the
   submission cannot undo any of the above, then execs the kernel.

Nothing outside the namespaces is visible to the kernel's processes (PID namespace): they cannot
signal the grader or other kernels, and they all end when the kernel (PID 1) ends. With a network
namespace of its own the kernel has no network at all; it talks to the grader through Unix sockets.

Usage: ``unshare ... -- python -I nsinit.py SPEC_JSON`` (see :mod:`coursework.grading.kernel`).
Only the standard library is used (this runs before anything else in the sandbox).
"""

import json
import os
import subprocess
import sys


def mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")  # octal escapes such as \040
            points.append(mp)
    return sorted(set(points), key=len)


def main() -> None:
    spec = json.loads(sys.argv[1])
    writable = [os.path.realpath(p) for p in spec["writable"]]
    for d in writable:
        if not mount("--bind", d, d):
            sys.exit(f"nsinit: could not bind {d}")
    if not mount("-o", "remount,bind,ro", "/"):
        sys.exit("nsinit: could not make / read-only")
    for mp in mount_points():
        if mp == "/" or mp in writable or mp.startswith("/proc"):
            continue
        mount("-o", "remount,bind,ro", mp)  # best effort for special file systems
    for d in spec.get("hide", []):
        if os.path.isdir(d):
            mount("-t", "tmpfs", "-o", "ro,size=4k,mode=0555", "tmpfs", d)
    if spec.get("loopback"):
        subprocess.run(["ip", "link", "set", "lo", "up"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.chdir(spec["cwd"])
    cmd = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs", "--", *spec["cmd"]]
    os.execvpe(cmd[0], cmd, spec["env"])


if __name__ == "__main__":
    main()
