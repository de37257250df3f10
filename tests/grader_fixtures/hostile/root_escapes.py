"""Everything that got out of the old sandbox when the grader ran as root, tried from a cell and again
while the grader calls the answer: write /proc/sys/kernel/* (hostname, domainname, core_pattern),
find cgroup files (cgroup.kill, create a cgroup), write /dev/kmsg, open /dev/kvm, /dev/loop-control,
/dev/console read-write, push characters into the grader's terminal (TIOCSTI), signal processes
outside, reach the network, fill the disk beyond the quota, fork without bound, create a user
namespace (to get capabilities in it). Anything that works is collected in ESCAPED, and the rotation
answer then raises an error that names it: contained means full marks."""
# %% after setup
import errno
import fcntl
import os
import socket
import termios

ESCAPED = []


def _try(name, action):
    try:
        action()
        ESCAPED.append(name)
    except Exception:
        pass


def _write(path, text="cw-escape"):
    def act():
        with open(path, "w") as f:
            f.write(text)
    return act


def _open_rw(path):
    def act():
        os.close(os.open(path, os.O_RDWR))
    return act


def _cgroup():
    for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if os.path.isdir(base):
            for dirpath, _, files in os.walk(base):
                if "cgroup.kill" in files:
                    with open(os.path.join(dirpath, "cgroup.kill"), "w") as f:
                        f.write("0")
                    return
            os.mkdir(os.path.join(base, "cw-escape"))
            return
    raise OSError("no cgroup file system")


def _tiocsti():
    for fd in (0, 1, 2):
        try:
            fcntl.ioctl(fd, termios.TIOCSTI, b"#")
            return
        except OSError:
            pass
    fd = os.open("/dev/tty", os.O_RDWR)
    fcntl.ioctl(fd, termios.TIOCSTI, b"#")


def _signal_outside():
    mine = {os.getpid(), os.getppid()}
    others = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in mine and int(p) > 2]
    for pid in others:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"coursework" in f.read():     # a grader process would be visible: that is the escape
                os.kill(pid, 0)
                return
    raise OSError("nothing outside is visible")


def _network():
    socket.create_connection(("1.1.1.1", 53), timeout=2).close()


def _disk():
    try:
        with open(os.path.expanduser("~/fill.bin"), "wb") as f:
            chunk = b"\0" * (16 * 1024**2)
            for _ in range(40):          # 640 MB: more than the home folder's quota
                f.write(chunk)
    finally:
        if os.path.exists(os.path.expanduser("~/fill.bin")):
            os.remove(os.path.expanduser("~/fill.bin"))


def _fork_bomb():
    kids = []
    try:
        for _ in range(400):
            pid = os.fork()
            if pid == 0:
                import time
                time.sleep(30)
                os._exit(0)
            kids.append(pid)
    finally:
        for pid in kids:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    if len(kids) >= 400:     # the sandbox allows 256 processes and threads
        return
    raise OSError(errno.EAGAIN, "fork limited")


def _userns():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if libc.unshare(0x10000000) == 0 else 1)   # CLONE_NEWUSER
    if os.waitpid(pid, 0)[1] != 0:
        raise OSError("no user namespace")


def attack(heavy=True):
    for name in ("hostname", "domainname", "core_pattern"):
        _try(f"/proc/sys/kernel/{name}", _write(f"/proc/sys/kernel/{name}", "|/tmp/cw-escape"))
    _try("/proc/sysrq-trigger", _write("/proc/sysrq-trigger", "h"))
    _try("cgroup", _cgroup)
    _try("/dev/kmsg", _write("/dev/kmsg", "cw-escape\n"))
    for dev in ("/dev/kvm", "/dev/loop-control", "/dev/console", "/dev/mem", "/dev/sda", "/dev/vda"):
        _try(dev, _open_rw(dev))
    _try("TIOCSTI", _tiocsti)
    _try("signal outside", _signal_outside)
    _try("network", _network)
    if heavy:   # once, in the cell (the calls of the tests have a few seconds of CPU time)
        _try("disk quota", _disk)
        _try("fork bomb", _fork_bomb)
        _try("user namespace", _userns)
    if os.getuid() == 0 or os.geteuid() == 0:
        ESCAPED.append("runs as uid 0")


attack()
print("escaped:", ESCAPED)
# %% replace q1_rotation
def rotation_matrix(angle, center):
    attack(heavy=False)   # again, while the grader is calling
    if ESCAPED:
        raise RuntimeError("escaped: " + ", ".join(sorted(set(ESCAPED))))
    c, s = math.cos(angle), math.sin(angle)
    c0, c1 = float(center[0]), float(center[1])
    R = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    T = torch.tensor([[1.0, 0.0, c0], [0.0, 1.0, c1], [0.0, 0.0, 1.0]])
    T_inv = torch.tensor([[1.0, 0.0, -c0], [0.0, 1.0, -c1], [0.0, 0.0, 1.0]])
    return T @ R @ T_inv
