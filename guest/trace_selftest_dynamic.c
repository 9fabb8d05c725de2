// Functions for ftrace's dynamic self-tests; nothing on the boot path calls them.
#include "types.h"
#include "defs.h"

noinline int trace_selftest_dynamic_test_func(void)
{
	// Used by the ftrace self test: must stay a function of its own.
	__asm__ volatile("");
	return 0;
}

noinline int trace_selftest_dynamic_test_func2(void)
{
	// Used by the ftrace self test: must stay a function of its own.
	__asm__ volatile("");
	return 0;
}
