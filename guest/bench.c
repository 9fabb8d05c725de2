// Benchmark workload: a call-heavy traced function, and busy threads running it (bench=N).
#include "types.h"
#include "memlayout.h"
#include "defs.h"

u64 bench_iterations;           // bench_fib(BENCH_FIB_N) calls finished by benchd threads

#define BENCH_FIB_N 18

// One traced call per call: fib(n) makes 2 * fib(n + 1) - 1 calls of itself.
noinline int bench_fib(int n)
{
	return n < 2 ? n : bench_fib(n - 1) + bench_fib(n - 2);
}

static int benchd(void *arg)
{
	for (;;) {
		bench_fib(BENCH_FIB_N);
		__atomic_fetch_add(&bench_iterations, 1, __ATOMIC_RELAXED);
	}
	return 0;
}

// bench=N on the command line starts N busy threads (keeping N CPUs busy).
void bench_init(void)
{
	int n = cmdline_get_int("bench", 0);

	for (int i = 0; i < n && i < NCPU; i++)
		kernel_thread(benchd, NULL, "benchd");
}
