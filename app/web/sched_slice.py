"""Ask the kernel for short time slices for the thread that runs the event loop.

Beside busy processes (`bench live --cpu-hog 2`) the loop's lateness is mostly the OS's doing:
measured with a probe that also read the thread's CPU time, wakes 20-75 ms late had used only
3-10 ms of CPU. Linux's scheduler (EEVDF, 6.6 and later) gives each runnable thread a virtual
deadline one time slice after it becomes eligible; since 6.12 a thread may ask for a shorter
slice (`sched_setattr`, `sched_runtime` for SCHED_OTHER, 0.1-100 ms, no privilege needed), which
gives it earlier deadlines, so on waking it preempts a thread that is using up a long slice. Its
share of the CPU is unchanged (same policy, same nice): a loop that mostly waits gets run sooner,
not more. Audio servers ask for the same thing.

Best effort: on another OS, an older kernel or a seccomp profile that refuses the call, nothing
changes and `apply` says why. Threads started afterwards by this thread inherit the setting.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

SLICE_NS = 500_000  # 0.5 ms: well under the 5 ms probe period and the default slice (~1.4 ms here)
_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275)}  # sched_setattr, sched_getattr
_SCHED_OTHER = 0


class _Attr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("policy", ctypes.c_uint32), ("flags", ctypes.c_uint64),
                ("nice", ctypes.c_int32), ("priority", ctypes.c_uint32), ("runtime", ctypes.c_uint64),
                ("deadline", ctypes.c_uint64), ("period", ctypes.c_uint64)]


def _syscalls() -> tuple[int, int] | None:
    if not sys.platform.startswith("linux"):
        return None
    return _SYSCALLS.get(platform.machine())


def current() -> int | None:
    """This thread's slice in ns as the kernel reports it (None: cannot be read here)."""
    calls = _syscalls()
    if calls is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    attr = _Attr()
    if libc.syscall(calls[1], 0, ctypes.byref(attr), ctypes.sizeof(attr), 0) != 0:
        return None
    return int(attr.runtime)


def apply(slice_ns: int = SLICE_NS) -> str | None:
    """Ask for `slice_ns` slices for the calling thread. None on success, else why not."""
    calls = _syscalls()
    if calls is None:
        return f"not supported on {sys.platform}/{platform.machine()}"
    libc = ctypes.CDLL(None, use_errno=True)
    attr = _Attr(size=ctypes.sizeof(_Attr), policy=_SCHED_OTHER, nice=os.getpriority(os.PRIO_PROCESS, 0),
                 runtime=slice_ns)
    if libc.syscall(calls[0], 0, ctypes.byref(attr), 0) != 0:
        return os.strerror(ctypes.get_errno())
    if current() != slice_ns:  # kernels before 6.12 accept the call and ignore the runtime
        return "this kernel ignores a custom slice (needs Linux 6.12 or later)"
    return None
