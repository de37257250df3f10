"""Calling the student's functions from the grader: the tests run in the grader, not in the kernel.

A test cell is ordinary Python (so nbgrader can run it in the student's kernel unchanged). Our
grader runs it in **its own** process instead, in a fresh namespace where every name that the
source notebook's solution cells define (functions, classes) is a :class:`StudentFunction` proxy.
Calling a proxy sends the arguments to the student's kernel, calls the student's object there and
sends the result back. Only plain data crosses, in JSON: numbers, strings, ``None``, lists, tuples,
dicts with string keys, and tensors / arrays as raw bytes with a whitelisted dtype (never pickle).
Anything else (a network, a bound method) stays in the kernel and comes back as a :class:`Handle`
that can be called or have attributes read.

So the assertions, the reference functions (``regedu``'s own, imported fresh by the test) and
``torch.allclose`` all live in the grader: whatever a submission redefines or monkeypatches in
its kernel (builtins, ``np.allclose``, ``regedu.warp``, IPython hooks) cannot change a test's
verdict; the most it can do is return wrong values, which fail.
"""

from __future__ import annotations

import base64
import builtins
import json
import time

import numpy as np

MAX_RESULT = 32 * 1024**2     # bytes of JSON accepted from the kernel per call
MAX_ELEMENTS = 2**22          # array elements accepted per call, all arrays together (4 M; the tests need far fewer)
DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}
# exceptions that keep their type when they cross (so a test can expect e.g. a ValueError)
PASS_THROUGH = {name: getattr(builtins, name) for name in (
    "ValueError", "TypeError", "NotImplementedError", "RuntimeError", "IndexError", "KeyError",
    "ZeroDivisionError", "AttributeError", "NameError", "AssertionError", "ArithmeticError",
    "LookupError", "OverflowError", "RecursionError", "MemoryError", "ImportError", "ModuleNotFoundError",
    "UnboundLocalError", "FloatingPointError", "OSError")}


class StudentError(Exception):
    """An exception raised by the student's code (in the kernel)."""


class KernelUnavailable(RuntimeError):
    """The kernel died, timed out or broke the protocol; the worker will restart it."""


class ResultTooLarge(StudentError, ValueError):
    """A result over the size cap: the question fails, the kernel stays usable."""


_error_types: dict[str, type] = {}


def _error_type(ename: str) -> type:
    base = PASS_THROUGH.get(ename, RuntimeError)
    if ename not in _error_types:
        _error_types[ename] = type(f"Student{ename}", (StudentError, base), {})
    return _error_types[ename]


# ---------------------------------------------------------------------------------------- codec
def encode(value, depth: int = 0):
    """Grader side: arguments -> JSON-able structure (tensors and arrays as bytes)."""
    import torch

    if depth > 20:
        raise ValueError("rpc: arguments nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Handle):
        return {"__handle__": value._id}
    if isinstance(value, torch.Tensor):
        return {"__tensor__": _array(value.detach().cpu().numpy())}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": _array(value)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, depth + 1) for v in value]}
    if isinstance(value, list):
        return [encode(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[str(k), encode(v, depth + 1)] for k, v in value.items()]}
    raise TypeError(f"rpc: cannot send a {type(value).__name__} to the student's kernel")


def _array(a: np.ndarray) -> dict:
    a = np.array(a, order="C", copy=True)  # (np.ascontiguousarray would turn 0-d into 1-d)
    if a.dtype.name not in DTYPES:
        raise TypeError(f"rpc: unsupported dtype {a.dtype}")
    return {"dtype": a.dtype.name, "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()}


def decode(text: str, remote: "Remote"):
    """Grader side: a result from the (untrusted) kernel -> Python data; strict about everything."""
    import torch

    if len(text) > MAX_RESULT:
        raise KernelUnavailable(f"the result is larger than {MAX_RESULT // 1024**2} MB")

    elements = [0]

    def array(spec) -> np.ndarray:
        if not isinstance(spec, dict) or spec.get("dtype") not in DTYPES:
            raise ValueError("bad array")
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape) or len(shape) > 8:
            raise ValueError("bad shape")
        elements[0] += int(np.prod(shape, dtype=np.int64))
        if elements[0] > MAX_ELEMENTS:
            raise OverflowError("too many array elements")
        raw = base64.b64decode(spec.get("data", ""), validate=True)
        a = np.frombuffer(raw, dtype=np.dtype(spec["dtype"]))
        if a.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError("array size does not match its shape")
        return a.reshape(shape).copy()

    def hook(d: dict):
        if len(d) == 1:
            (k, v), = d.items()
            if k == "__tensor__":
                return torch.from_numpy(array(v))
            if k == "__ndarray__":
                return array(v)
            if k == "__tuple__" and isinstance(v, list):
                return tuple(v)
            if k == "__dict__" and isinstance(v, list):
                return {str(kv[0]): kv[1] for kv in v if isinstance(kv, list) and len(kv) == 2}
        if set(d) == {"__handle__", "type"} and isinstance(d["__handle__"], int):
            return Handle(remote, d["__handle__"], str(d["type"])[:100])
        return d

    try:
        return json.loads(text, object_hook=hook)
    except OverflowError:
        raise ResultTooLarge(f"your result has more than {MAX_ELEMENTS} array elements; the grader refuses it") from None
    except (ValueError, TypeError, RecursionError) as e:
        raise KernelUnavailable(f"the kernel sent a malformed result ({type(e).__name__})") from None


# ---------------------------------------------------------------------------------------- proxies
class Remote:
    """Grader side of the channel to one kernel; ``deadline`` bounds every call (monotonic seconds)."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.deadline = float("inf")
        self.cpu_budget = float("inf")   # CPU seconds the current test may spend in the kernel
        self.cpu_spent = 0.0
        self.wait_budget = float("inf")  # seconds it may wait there without computing
        self.waited = 0.0
        self.broken = ""
        self.calls = 0

    def request(self, req: dict):
        if self.broken:
            raise KernelUnavailable(self.broken)
        timeout = self.deadline - time.monotonic()
        cpu = self.cpu_budget - self.cpu_spent
        wait = self.wait_budget - self.waited
        if timeout <= 0 or cpu <= 0 or wait <= 0:
            raise TimeoutError("the test ran out of time")
        payload = json.dumps(req)
        self.calls += 1
        res = self.kernel.execute(f"__coursework_rpc__.call({payload!r})", timeout=timeout, rpc=True,
                                  cpu=None if cpu == float("inf") else cpu, wait=None if wait == float("inf") else wait)
        self.cpu_spent += min(res.cpu_s, cpu)
        self.waited += min(res.waited, wait)
        if res.status in ("timeout", "died"):
            self.broken = "the student's code " + ("timed out" if res.status == "timeout" else "killed the kernel")
            if res.status == "timeout":
                raise TimeoutError(f"your code did not return: {res.evalue}")
            raise KernelUnavailable(self.broken)
        if res.rpc is None:
            raise KernelUnavailable("no result from the kernel" + (f" ({res.summary()})" if res.status == "error" else ""))
        out = decode(res.rpc, self)
        if not isinstance(out, dict):
            raise KernelUnavailable("the kernel sent a malformed result")
        if "error" in out:
            err = out["error"] if isinstance(out["error"], list) else ["Error", ""]
            ename, evalue = str(err[0])[:100], str(err[1] if len(err) > 1 else "")[:2000]
            raise _error_type(ename)(f"{ename}: {evalue}")
        return out.get("ok")

    def call(self, target: dict, args, kwargs):
        return self.request({"op": "call", "target": target, "args": encode(list(args)),
                             "kwargs": encode(dict(kwargs))})

    def getattr(self, target: dict, name: str):
        return self.request({"op": "getattr", "target": target, "name": name})


class StudentFunction:
    """Stands for a function or class that the student's notebook defines."""

    def __init__(self, remote: Remote, name: str):
        self._remote, self._name = remote, name

    def __call__(self, *args, **kwargs):
        return self._remote.call({"name": self._name}, args, kwargs)

    def __repr__(self) -> str:
        return f"<student's {self._name}>"


class Handle:
    """An object that stays in the student's kernel (e.g. a network): call it or read its attributes."""

    def __init__(self, remote: Remote, id_: int, typename: str):
        self._remote, self._id, self._type = remote, id_, typename

    def __call__(self, *args, **kwargs):
        return self._remote.call({"handle": self._id}, args, kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._remote.getattr({"handle": self._id}, name)

    def __repr__(self) -> str:
        return f"<student's {self._type} object>"


# ---------------------------------------------------------------------------------------- kernel side
# Injected into the kernel after the student's cells have run. It runs in the untrusted process, so
# nothing the grader relies on is here: it only unpacks arguments, calls, and packs the result.
KERNEL_HELPER = r'''
def __coursework_install():
    import base64, json, sys, traceback
    import numpy as np
    ip = get_ipython()
    DTYPES = %(dtypes)r
    MIME = %(mime)r

    class Payload:
        def __init__(self, text):
            self.text = text
        def _repr_mimebundle_(self, include=None, exclude=None):
            return {MIME: self.text}

    class RPC:
        def __init__(self):
            self.handles, self.result = {}, None

        def _array(self, a):
            a = np.array(a, order="C", copy=True)
            if a.dtype.name not in DTYPES:
                a = a.astype(np.float64)
            return {"dtype": a.dtype.name, "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()}

        def enc(self, v, depth=0):
            torch = sys.modules.get("torch")
            if v is None or isinstance(v, (bool, int, float, str)):
                return v
            if depth > 20:
                raise ValueError("result nested too deeply")
            if torch is not None and isinstance(v, torch.Size):
                return {"__tuple__": list(v)}
            if torch is not None and isinstance(v, torch.Tensor):
                return {"__tensor__": self._array(v.detach().cpu().resolve_conj().numpy())}
            if isinstance(v, np.ndarray):
                return {"__ndarray__": self._array(v)}
            if isinstance(v, np.generic):
                return v.item()
            if isinstance(v, tuple):
                return {"__tuple__": [self.enc(x, depth + 1) for x in v]}
            if isinstance(v, list):
                return [self.enc(x, depth + 1) for x in v]
            if isinstance(v, dict) and all(isinstance(k, str) for k in v):
                return {"__dict__": [[k, self.enc(x, depth + 1)] for k, x in v.items()]}
            key = len(self.handles) + 1
            self.handles[key] = v
            return {"__handle__": key, "type": type(v).__name__}

        def dec(self, d):
            torch = sys.modules.get("torch")
            if len(d) == 1:
                (k, v), = d.items()
                if k in ("__tensor__", "__ndarray__"):
                    a = np.frombuffer(base64.b64decode(v["data"]), dtype=v["dtype"]).reshape(v["shape"]).copy()
                    return torch.from_numpy(a) if k == "__tensor__" else a
                if k == "__tuple__":
                    return tuple(v)
                if k == "__dict__":
                    return {kk: vv for kk, vv in v}
                if k == "__handle__":
                    return self.handles[v]
            return d

        def target(self, t):
            if "handle" in t:
                return self.handles[t["handle"]]
            if t["name"] not in ip.user_ns:
                raise NameError(f"name {t['name']!r} is not defined (did its cell run?)")
            return ip.user_ns[t["name"]]

        def call(self, text):
            self.result = None
            try:
                req = json.loads(text, object_hook=self.dec)
                obj = self.target(req["target"])
                if req["op"] == "getattr":
                    value = getattr(obj, req["name"])
                else:
                    value = obj(*req["args"], **req["kwargs"])
                out = {"ok": self.enc(value)}
            except BaseException as e:
                out = {"error": [type(e).__name__, str(e)]}
            self.result = Payload(json.dumps(out))

    return RPC()

__coursework_rpc__ = __coursework_install()
del __coursework_install
'''


def kernel_helper(mime: str) -> str:
    return KERNEL_HELPER % {"dtypes": sorted(DTYPES), "mime": mime}
