"""The function tracer (kernel/trace/trace_functions.c): the trace array's ops registered with
the guest callback ``function_trace_call`` (arch/x86/trace_64.py), so a traced call writes its
TRACE_FN event into the ring buffer without leaving the guest."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .trace import Tracer

if TYPE_CHECKING:
    from .trace import TraceArray


class FunctionTracer(Tracer):
    """The function tracer: ``tr.ops`` registered with the guest callback
    function_trace_call, so every traced call writes its event without leaving the guest."""

    name = "function"

    def init(self, tr: "TraceArray") -> None:
        tr.ops.func = tr.callback
        tr.tracing.ft.register_ftrace_function(tr.ops)

    def reset(self, tr: "TraceArray") -> None:
        tr.tracing.ft.unregister_ftrace_function(tr.ops)
