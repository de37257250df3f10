"""Leaves a SysV shared-memory segment and a POSIX message queue behind (well-known keys and names),
and looks for the ones an earlier (or concurrent) submission left. With a new IPC namespace per
kernel, nothing is found and nothing survives the kernel: full marks. If it finds a message, its
rotation answer raises an error naming it."""
# %% after setup
import ctypes
import os
import time

FOUND_IPC = []
_libc = ctypes.CDLL(None, use_errno=True)
_rt = ctypes.CDLL("librt.so.1", use_errno=True)
KEY, QUEUE = 0x0C0FFEE, b"/cw-hostile-queue"


def _shm_look_and_leave():
    shmid = _libc.shmget(KEY, 4096, 0)
    if shmid >= 0:
        FOUND_IPC.append("SysV shared memory of another submission")
    shmid = _libc.shmget(KEY, 4096, 0o1666)   # IPC_CREAT | 0666
    _libc.shmat.restype = ctypes.c_void_p
    addr = _libc.shmat(shmid, None, 0)
    if addr not in (None, ctypes.c_void_p(-1).value):
        ctypes.memmove(addr, b"cw-secret-message", 17)


def _mq_look_and_leave():
    _rt.mq_open.restype = ctypes.c_int
    fd = _rt.mq_open(QUEUE, os.O_RDONLY | os.O_NONBLOCK)
    if fd >= 0:
        buf = ctypes.create_string_buffer(8192)
        n = _rt.mq_receive(fd, buf, 8192, None)
        FOUND_IPC.append("POSIX message queue of another submission" + (f": {buf.raw[:n]!r}" if n > 0 else ""))
    fd = _rt.mq_open(QUEUE, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK, 0o666, None)
    if fd >= 0:
        _rt.mq_send(fd, b"cw-secret-message", 17, 0)


for _ in range(3):   # a concurrent submission may leave its segment a moment later
    _shm_look_and_leave()
    _mq_look_and_leave()
    time.sleep(0.5)
# %% replace q1_rotation
def rotation_matrix(angle, center):
    _shm_look_and_leave()
    _mq_look_and_leave()
    if FOUND_IPC:
        raise RuntimeError("found: " + "; ".join(FOUND_IPC))
    c, s = math.cos(angle), math.sin(angle)
    c0, c1 = float(center[0]), float(center[1])
    R = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    T = torch.tensor([[1.0, 0.0, c0], [0.0, 1.0, c1], [0.0, 0.0, 1.0]])
    T_inv = torch.tensor([[1.0, 0.0, -c0], [0.0, 1.0, -c1], [0.0, 0.0, 1.0]])
    return T @ R @ T_inv
