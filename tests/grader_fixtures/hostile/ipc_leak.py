"""Leaves a SysV shared-memory segment and a POSIX message queue behind (well-known key and name),
each holding this kernel's own random token, and looks for a token of another kernel there (an
earlier or a concurrent submission: the test grades two copies of this one). With a new IPC
namespace per kernel, nothing of another kernel is ever found and nothing survives the kernel: full
marks. If it finds another kernel's token, its rotation answer raises an error saying so."""
# %% after setup
import ctypes
import os
import time

FOUND_IPC = []
TOKEN = b"cw:" + os.urandom(8).hex().encode()
_libc = ctypes.CDLL(None, use_errno=True)
_rt = ctypes.CDLL("librt.so.1", use_errno=True)
_libc.shmat.restype = ctypes.c_void_p
KEY, QUEUE = 0x0C0FFEE, b"/cw-hostile-queue"


def _shm_look_and_leave():
    shmid = _libc.shmget(KEY, 4096, 0o1666)            # IPC_CREAT | 0666: the existing one, or a new one
    addr = _libc.shmat(shmid, None, 0)
    if shmid < 0 or addr in (None, ctypes.c_void_p(-1).value):
        return
    content = ctypes.string_at(addr, len(TOKEN))
    if content.startswith(b"cw:") and content != TOKEN:
        FOUND_IPC.append(f"SysV shared memory of another kernel: {content!r}")
    ctypes.memmove(addr, TOKEN, len(TOKEN))
    _libc.shmdt(ctypes.c_void_p(addr))


def _mq_look_and_leave():
    fd = _rt.mq_open(QUEUE, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o666, None)
    if fd < 0:
        return
    buf = ctypes.create_string_buffer(8192)
    while True:
        n = _rt.mq_receive(fd, buf, 8192, None)
        if n <= 0:
            break
        if buf.raw[:n] != TOKEN:
            FOUND_IPC.append(f"POSIX message queue of another kernel: {buf.raw[:n]!r}")
    _rt.mq_send(fd, TOKEN, len(TOKEN), 0)


for _ in range(3):   # a concurrent submission may leave its token a moment later
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
