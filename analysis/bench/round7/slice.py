"""Sets a custom EEVDF slice (sched_setattr, SCHED_OTHER with sched_runtime) on threads."""
import ctypes, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
SYS_sched_setattr, SYS_sched_getattr = 314, 315
def set_slice(tid, ns):
    attr = struct.pack("IIQiIQQQII", 56, 0, 0, 0, 0, ns, 0, 0, 0, 0)
    buf = ctypes.create_string_buffer(attr, 56)
    r = libc.syscall(SYS_sched_setattr, ctypes.c_int(tid), buf, ctypes.c_uint(0))
    if r != 0:
        raise OSError(ctypes.get_errno(), f"sched_setattr {tid}")
def get_slice(tid):
    buf = ctypes.create_string_buffer(56)
    r = libc.syscall(SYS_sched_getattr, ctypes.c_int(tid), buf, ctypes.c_uint(56), ctypes.c_uint(0))
    if r != 0:
        raise OSError(ctypes.get_errno(), "sched_getattr")
    return struct.unpack("IIQiIQQQII", buf.raw)[5]
if __name__ == "__main__":
    import os
    tid = os.getpid(); print("before", get_slice(tid)); set_slice(tid, int(sys.argv[1])); print("after", get_slice(tid))
