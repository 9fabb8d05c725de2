"""Launch the free-running mode many times, several at a time, and count hangs and failed
boots (issue 7's goal: none in 200 launches two at a time).

Each launch is a fresh process (a hang cannot hide behind another): boot, then run 50 ms
with the busy guest. A launch that does not finish within ``--timeout`` seconds is a hang,
and its Python stack is printed.

Run: python tools/bench/launch_free.py [--launches 200] [--parallel 2] [--cpus 1,2,4]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import faulthandler, sys, time
faulthandler.dump_traceback_later({timeout}, exit=True)
sys.path.insert(0, {root!r})
from emu import Machine
m = Machine(cpus={cpus}, cmdline="console=ttyS0 bench=1", deterministic=False)
t = time.perf_counter()
try:
    m.boot()
    m.run(ms=50)
except Exception as e:
    print("FAIL", type(e).__name__, e)
    print(m.console[-2000:])
    sys.exit(1)
print("ok %.3f" % (time.perf_counter() - t))
"""


def launch(cpus: int, timeout: float) -> tuple[str, float, str]:
    """One launch: ('ok' | 'hang' | 'fail', host seconds, output)."""
    code = CHILD.format(timeout=timeout, root=str(ROOT), cpus=cpus)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout + 30)
    out = r.stdout + r.stderr
    kind = "ok" if r.returncode == 0 else ("hang" if "Timeout (" in out else "fail")
    return kind, time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--launches", type=int, default=200)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--cpus", default="1", help="comma-separated vCPU counts, used in turn")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before a launch is a hang")
    a = ap.parse_args()
    cpus = [int(c) for c in a.cpus.split(",")]
    counts = {"ok": 0, "hang": 0, "fail": 0}
    with ThreadPoolExecutor(a.parallel) as pool:
        jobs = [pool.submit(launch, cpus[i % len(cpus)], a.timeout) for i in range(a.launches)]
        for i, job in enumerate(jobs):
            kind, secs, out = job.result()
            counts[kind] += 1
            if kind != "ok":
                print(f"launch {i} (cpus={cpus[i % len(cpus)]}): {kind} after {secs:.1f} s\n{out}")
    print(f"{a.launches} free-running launches, {a.parallel} at a time, cpus {a.cpus}: "
          f"{counts['ok']} ok, {counts['hang']} hung, {counts['fail']} failed")
    sys.exit(0 if counts["ok"] == a.launches else 1)


if __name__ == "__main__":
    main()
