"""The function tracer (kernel/trace/trace_functions.c): the trace array's ops registered with
the guest callback ``function_trace_call`` (arch/x86/trace_64.py), so a traced call writes its
TRACE_FN event into the ring buffer without leaving the guest; with ``func_stack_trace``,
``function_stack_trace_call`` (arch/x86/func_stack_64.py), which adds the call chain."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .trace import Tracer

if TYPE_CHECKING:
    from .trace import TraceArray

# The function tracer's own options (func_opts), with their defaults.
FUNC_OPTIONS: dict[str, bool] = {"func_stack_trace": False}


class FunctionTracer(Tracer):
    """The function tracer: ``tr.ops`` registered with the guest callback
    function_trace_call, so every traced call writes its event without leaving the guest."""

    name = "function"

    def init(self, tr: "TraceArray") -> None:
        tr.ops.func = tr.stack_callback if "func_stack_trace" in tr.options else tr.callback
        tr.tracing.ft.register_ftrace_function(tr.ops)

    def set_flag(self, tr: "TraceArray", name: str, on: bool) -> None:
        """func_set_flag: a running tracer is re-registered with the other callback."""
        if tr.tracer is self:
            tr.tracing.ft.unregister_ftrace_function(tr.ops)
            tr.ops.func = tr.stack_callback if on else tr.callback
            tr.tracing.ft.register_ftrace_function(tr.ops)

    def reset(self, tr: "TraceArray") -> None:
        tr.tracing.ft.unregister_ftrace_function(tr.ops)
