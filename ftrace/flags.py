"""Flag values of include/linux/ftrace.h: ftrace_ops flags and dyn_ftrace record flags."""

from __future__ import annotations

import enum

MCOUNT_INSN_SIZE = 5  # call __fentry__ / nopl 0x0(%rax,%rax,1)


class FtraceOpsFlags(enum.IntFlag):
    """`FTRACE_OPS_FL_*`: bit n of ftrace_ops.flags, values as in the kernel enum."""

    ENABLED = 1 << 0
    DYNAMIC = 1 << 1
    SAVE_REGS = 1 << 2
    SAVE_REGS_IF_SUPPORTED = 1 << 3
    RECURSION = 1 << 4
    STUB = 1 << 5
    INITIALIZED = 1 << 6
    DELETED = 1 << 7
    ADDING = 1 << 8
    REMOVING = 1 << 9
    MODIFYING = 1 << 10
    ALLOC_TRAMP = 1 << 11
    IPMODIFY = 1 << 12
    PID = 1 << 13
    RCU = 1 << 14
    TRACE_ARRAY = 1 << 15
    PERMANENT = 1 << 16
    DIRECT = 1 << 17
    SUBOP = 1 << 18
    GRAPH = 1 << 19


FTRACE_OPS_FL_ENABLED = FtraceOpsFlags.ENABLED
FTRACE_OPS_FL_DYNAMIC = FtraceOpsFlags.DYNAMIC
FTRACE_OPS_FL_SAVE_REGS = FtraceOpsFlags.SAVE_REGS
FTRACE_OPS_FL_SAVE_REGS_IF_SUPPORTED = FtraceOpsFlags.SAVE_REGS_IF_SUPPORTED
FTRACE_OPS_FL_RECURSION = FtraceOpsFlags.RECURSION
FTRACE_OPS_FL_STUB = FtraceOpsFlags.STUB
FTRACE_OPS_FL_INITIALIZED = FtraceOpsFlags.INITIALIZED
FTRACE_OPS_FL_DELETED = FtraceOpsFlags.DELETED
FTRACE_OPS_FL_ADDING = FtraceOpsFlags.ADDING
FTRACE_OPS_FL_REMOVING = FtraceOpsFlags.REMOVING
FTRACE_OPS_FL_MODIFYING = FtraceOpsFlags.MODIFYING
FTRACE_OPS_FL_ALLOC_TRAMP = FtraceOpsFlags.ALLOC_TRAMP
FTRACE_OPS_FL_IPMODIFY = FtraceOpsFlags.IPMODIFY
FTRACE_OPS_FL_PID = FtraceOpsFlags.PID
FTRACE_OPS_FL_RCU = FtraceOpsFlags.RCU
FTRACE_OPS_FL_TRACE_ARRAY = FtraceOpsFlags.TRACE_ARRAY
FTRACE_OPS_FL_PERMANENT = FtraceOpsFlags.PERMANENT
FTRACE_OPS_FL_DIRECT = FtraceOpsFlags.DIRECT
FTRACE_OPS_FL_SUBOP = FtraceOpsFlags.SUBOP
FTRACE_OPS_FL_GRAPH = FtraceOpsFlags.GRAPH


class FtraceRecFlags(enum.IntFlag):
    """`FTRACE_FL_*` of dyn_ftrace.flags; bits 0-18 hold the reference count.

    A plain bit is the wanted state, its `_EN` twin the state of the code right now.
    """

    MODIFIED = 1 << 19
    TOUCHED = 1 << 20
    CALL_OPS_EN = 1 << 21
    CALL_OPS = 1 << 22
    DIRECT_EN = 1 << 23
    DIRECT = 1 << 24
    DISABLED = 1 << 25
    IPMODIFY = 1 << 26
    TRAMP_EN = 1 << 27
    TRAMP = 1 << 28
    REGS_EN = 1 << 29
    REGS = 1 << 30
    ENABLED = 1 << 31


# Plain ints: record flags are tested per site on every update, and IntFlag arithmetic
# costs about a microsecond per operation.
FTRACE_FL_MODIFIED = int(FtraceRecFlags.MODIFIED)
FTRACE_FL_TOUCHED = int(FtraceRecFlags.TOUCHED)
FTRACE_FL_CALL_OPS_EN = int(FtraceRecFlags.CALL_OPS_EN)
FTRACE_FL_CALL_OPS = int(FtraceRecFlags.CALL_OPS)
FTRACE_FL_DIRECT_EN = int(FtraceRecFlags.DIRECT_EN)
FTRACE_FL_DIRECT = int(FtraceRecFlags.DIRECT)
FTRACE_FL_DISABLED = int(FtraceRecFlags.DISABLED)
FTRACE_FL_IPMODIFY = int(FtraceRecFlags.IPMODIFY)
FTRACE_FL_TRAMP_EN = int(FtraceRecFlags.TRAMP_EN)
FTRACE_FL_TRAMP = int(FtraceRecFlags.TRAMP)
FTRACE_FL_REGS_EN = int(FtraceRecFlags.REGS_EN)
FTRACE_FL_REGS = int(FtraceRecFlags.REGS)
FTRACE_FL_ENABLED = int(FtraceRecFlags.ENABLED)

FTRACE_REF_MAX_SHIFT = 19
FTRACE_REF_MAX = (1 << FTRACE_REF_MAX_SHIFT) - 1
# Bits that survive the last reference going away (ftrace_check_record).
FTRACE_NOCLEAR_FLAGS = FTRACE_FL_DISABLED | FTRACE_FL_TOUCHED | FTRACE_FL_MODIFIED
