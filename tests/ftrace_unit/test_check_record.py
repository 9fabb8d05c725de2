"""ftrace_check_record: the pure decision for one site, and the bits it commits."""

from __future__ import annotations

import pytest

from ftrace.flags import (
    FTRACE_FL_DISABLED, FTRACE_FL_ENABLED, FTRACE_FL_IPMODIFY, FTRACE_FL_MODIFIED,
    FTRACE_FL_REGS, FTRACE_FL_REGS_EN, FTRACE_FL_TOUCHED, FTRACE_FL_TRAMP, FTRACE_FL_TRAMP_EN,
)
from ftrace.records import DynFtrace
from ftrace.update import (
    IGNORE, MAKE_CALL, MAKE_NOP, MODIFY_CALL, ftrace_test_record, ftrace_update_record,
)

EN, REGS, REGS_EN = FTRACE_FL_ENABLED, FTRACE_FL_REGS, FTRACE_FL_REGS_EN
TRAMP, TRAMP_EN, TOUCHED = FTRACE_FL_TRAMP, FTRACE_FL_TRAMP_EN, FTRACE_FL_TOUCHED


@pytest.mark.parametrize("flags, enable, action, after", [
    (0, True, IGNORE, 0),                                          # unused NOP
    (1, True, MAKE_CALL, 1 | EN | TOUCHED),                        # NOP -> ftrace_caller
    (1 | REGS, True, MAKE_CALL, 1 | REGS | REGS_EN | EN | TOUCHED),
    (1 | TRAMP, True, MAKE_CALL, 1 | TRAMP | TRAMP_EN | EN | TOUCHED),
    (1 | EN | TOUCHED, True, IGNORE, 1 | EN | TOUCHED),
    (1 | REGS | EN | TOUCHED, True, MODIFY_CALL, 1 | REGS | REGS_EN | EN | TOUCHED),
    (2 | EN | TRAMP_EN | TOUCHED, True, MODIFY_CALL, 2 | EN | TOUCHED),  # second ops
    (1 | EN | REGS_EN | TOUCHED, True, MODIFY_CALL, 1 | EN | TOUCHED),   # regs ops left
    (0 | EN | TRAMP_EN | TOUCHED, True, MAKE_NOP, TOUCHED),        # last reference gone
    (1 | TRAMP | TRAMP_EN | EN | TOUCHED, False, MAKE_NOP, 1 | TRAMP | TOUCHED),  # disable
    (1 | REGS | EN | REGS_EN | TOUCHED, False, MAKE_NOP, 1 | REGS | TOUCHED),
    (1 | FTRACE_FL_IPMODIFY, True, MAKE_CALL,
     1 | FTRACE_FL_IPMODIFY | EN | TOUCHED | FTRACE_FL_MODIFIED),
    (1 | FTRACE_FL_DISABLED, True, IGNORE, 1 | FTRACE_FL_DISABLED),
    (FTRACE_FL_MODIFIED | TOUCHED | REGS | EN, True, MAKE_NOP, FTRACE_FL_MODIFIED | TOUCHED),
])
def test_transition(flags, enable, action, after):
    rec = DynFtrace(0x1000, flags)
    assert ftrace_test_record(rec, enable) == action
    assert rec.flags == flags  # testing changes nothing
    assert ftrace_update_record(rec, enable) == action
    assert rec.flags == after
    assert ftrace_test_record(rec, enable) == IGNORE
