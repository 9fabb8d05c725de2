"""Livepatch benchmark: what a patched call costs beside the unpatched one.

A bench module defines klp_bench_target(x) and klp_bench_loop(n), which calls it n times; a
patch module replaces the target. Per call, measured side by side in one run (paired
rounds, min/median/max of the ratios): unpatched (a NOP fentry site) against patched (the
private trampoline with SAVE_REGS, the guest's klp_ftrace_handler, the ret into new_func).

Run: python tools/bench/bench_livepatch.py
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from common import row, verdict

from emu import Machine
from emu.kbuild import build_module

LOOP = 20_000
ROUNDS = 7
TARGET_ADDED_NS = 200

BENCH_MOD = r"""
#include <linux/module.h>
noinline int klp_bench_target(int x) { return x + 1; }
noinline int klp_bench_loop(int n)
{
	int s = 0;
	for (int i = 0; i < n; i++)
		s += klp_bench_target(i);
	return s;
}
static int klp_bench_init(void) { return 0; }
static void klp_bench_exit(void) { }
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


def loop_time(m: Machine) -> float:
    t = time.perf_counter()
    m.call("klp_bench_loop", LOOP)
    return time.perf_counter() - t


def transition_done(m: Machine) -> bool:
    return m.livepatch.transition.patch is None


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        bench_ko, patch_ko = build(Path(d))
        plain, patched = Machine(cpus=1), Machine(cpus=1)
        for m in (plain, patched):
            m.boot()
            m.insmod(bench_ko)
        patched.insmod(patch_ko)
        patched.run_until(lambda: transition_done(patched), 5000)
        assert patched.call("klp_bench_loop", 3) == 2 + 3 + 4
        assert plain.call("klp_bench_loop", 3) == 1 + 2 + 3
        ratios, added = [], []
        for _ in range(ROUNDS):
            t0, t1 = loop_time(plain), loop_time(patched)
            ratios.append(t1 / t0)
            added.append((t1 - t0) / LOOP * 1e9)
        print(f"ftemu livepatch benchmarks: {LOOP} calls per run, {ROUNDS} paired rounds")
        row("patched / unpatched call (min/median/max)",
            f"{min(ratios):.2f}/{statistics.median(ratios):.2f}/{max(ratios):.2f}")
        med = statistics.median(added)
        row("added per patched call, ns (min/median/max)",
            f"{min(added):.0f}/{med:.0f}/{max(added):.0f}",
            verdict(med <= TARGET_ADDED_NS) + f" target <= {TARGET_ADDED_NS} ns")


if __name__ == "__main__":
    main()
