"""Livepatch benchmarks: what a patched call costs beside the unpatched one, and what a whole
transition costs in host time on a busy machine.

1. Per call. A bench module defines klp_bench_target(x) and klp_bench_loop(n), which calls it
   n times; a patch module replaces the target. Measured side by side in one run (paired
   rounds, each pair in alternating order, min/median/max): unpatched (a NOP fentry site)
   against patched (the ops' private trampoline, which builds ftrace_regs as the kernel's
   ftrace_caller does for klp's ops without SAVE_REGS, the guest's klp_ftrace_handler, the
   ret into new_func). Host time is the thread's CPU time (the host is shared); the guest
   instructions added per call are exact.
2. Transition. 8 vCPUs, WORKERS kernel threads that call the target and sleep 1 ms in a loop
   (the guest has 64 task slots); insmod of the patch until its transition completes, then
   the unpatching transition, each from the same snapshot per round. Sleeping tasks switch by
   the host's stack check; a task running on a vCPU at that moment switches at its next safe
   point, but, as in Linux 6.1, the transition is only seen complete by the retry work one
   second (HZ) later: then the figure is mostly the host time of one busy guest second.

Run: python tools/bench/bench_livepatch.py
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from common import min_med_max, row, verdict

from emu import Machine
from emu.kbuild import build_module

LOOP = 50_000
ROUNDS = 21
TARGET_ADDED_NS = 200
CPUS, WORKERS, TRANSITION_ROUNDS = 8, 50, 5
BUDGET_MS = 20_000

BENCH_MOD = r"""
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/delay.h>
#include <linux/errno.h>
struct task;
extern struct task *kernel_thread(int (*fn)(void *), void *arg, const char *name);
static int workers;
module_param(workers, int, 0444);
static volatile int stop;
static volatile long sink;

noinline int klp_bench_target(int x) { return x + 1; }
noinline int klp_bench_loop(int n)
{
	int s = 0;
	for (int i = 0; i < n; i++)
		s += klp_bench_target(i);
	return s;
}
static int worker(void *arg)
{
	while (!stop) {
		sink += klp_bench_target((long)arg);
		msleep(1);
	}
	return 0;
}
static int klp_bench_init(void)
{
	for (long i = 0; i < workers; i++)
		if (!kernel_thread(worker, (void *)i, "klp_bench"))
			return -ENOMEM;
	return 0;
}
static void klp_bench_exit(void)
{
	stop = 1;
	msleep(20);
}
module_init(klp_bench_init);
module_exit(klp_bench_exit);
MODULE_LICENSE("GPL");
"""

PATCH_MOD = r"""
#include <linux/module.h>
#include <linux/livepatch.h>
static int patched_target(int x) { return x + 2; }
static struct klp_func funcs[] = { { .old_name = "klp_bench_target", .new_func = patched_target }, { } };
static struct klp_object objs[] = { { .name = "klp_bench", .funcs = funcs }, { } };
static struct klp_patch patch = { .mod = THIS_MODULE, .objs = objs };
static int klp_bench_patch_init(void) { return klp_enable_patch(&patch); }
static void klp_bench_patch_exit(void) { }
module_init(klp_bench_patch_init);
module_exit(klp_bench_patch_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
"""


def build(tmp: Path) -> tuple[Path, Path]:
    (tmp / "klp_bench.c").write_text(BENCH_MOD)
    (tmp / "klp_bench_patch.c").write_text(PATCH_MOD)
    return build_module(tmp / "klp_bench.c"), build_module(tmp / "klp_bench_patch.c")


def loop_time(m: Machine) -> tuple[float, int]:
    """Host CPU seconds and guest instructions of LOOP calls of the target."""
    t = time.thread_time()
    m.call("klp_bench_loop", LOOP)
    return time.thread_time() - t, m.last_call_instructions


def transition_done(m: Machine) -> bool:
    return m.livepatch.transition.patch is None


def bench_call(bench_ko: Path, patch_ko: Path) -> None:
    plain, patched = Machine(cpus=1), Machine(cpus=1)
    for m in (plain, patched):
        m.boot()
        m.insmod(bench_ko)
    patched.insmod(patch_ko)
    patched.run_until(lambda: transition_done(patched), 5000)
    assert patched.call("klp_bench_loop", 3) == 2 + 3 + 4
    assert plain.call("klp_bench_loop", 3) == 1 + 2 + 3
    ratios, added, insns = [], [], 0
    for n in range(ROUNDS):
        if n % 2:
            (t1, i1), (t0, i0) = loop_time(patched), loop_time(plain)
        else:
            (t0, i0), (t1, i1) = loop_time(plain), loop_time(patched)
        ratios.append(t1 / t0)
        added.append((t1 - t0) / LOOP * 1e9)
        insns = (i1 - i0) / LOOP
    print(f"ftemu livepatch benchmarks: {LOOP} calls per run, {ROUNDS} paired rounds "
          "(host thread CPU time)")
    row("patched / unpatched call (min/median/max)", min_med_max(ratios))
    row("added per patched call, ns (min/median/max)", min_med_max(added, "{:.0f}"),
        verdict(statistics.median(added) <= TARGET_ADDED_NS) + f" target <= {TARGET_ADDED_NS} ns")
    row("added guest instructions per patched call", f"{insns:.0f}")


def bench_transition(bench_ko: Path, patch_ko: Path) -> None:
    m = Machine(cpus=CPUS)
    m.boot()
    m.insmod(bench_ko, f"workers={WORKERS}")
    m.run(ms=20)                                  # every worker started and looping
    tasks = len(m.kernel.tasks())
    snap = m.snapshot()
    host_on, host_off, guest_on, guest_off = [], [], [], []
    for _ in range(TRANSITION_ROUNDS):
        m.restore(snap)
        v0, t0 = m.now, time.thread_time()
        m.insmod(patch_ko)
        m.run_until(lambda: transition_done(m), BUDGET_MS)
        host_on.append((time.thread_time() - t0) * 1e3)
        guest_on.append((m.now - v0) / 1e6)
        v0, t0 = m.now, time.thread_time()
        m.fs.write("/sys/kernel/livepatch/klp_bench_patch/enabled", "0")
        m.run_until(lambda: transition_done(m), BUDGET_MS)
        host_off.append((time.thread_time() - t0) * 1e3)
        guest_off.append((m.now - v0) / 1e6)
    print(f"  a full transition: {CPUS} vCPUs, {WORKERS} workers calling the target and sleeping "
          f"1 ms ({tasks} tasks with idle ones), {TRANSITION_ROUNDS} rounds from one snapshot")
    row("patching: insmod to complete, host ms (min/median/max)", min_med_max(host_on, "{:.0f}"))
    row("  guest ms it spanned (min/median/max)", min_med_max(guest_on, "{:.1f}"))
    row("unpatching: enabled=0 to complete, host ms", min_med_max(host_off, "{:.0f}"))
    row("  guest ms it spanned (min/median/max)", min_med_max(guest_off, "{:.1f}"))


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        bench_ko, patch_ko = build(Path(d))
        bench_call(bench_ko, patch_ko)
        bench_transition(bench_ko, patch_ko)


if __name__ == "__main__":
    main()
