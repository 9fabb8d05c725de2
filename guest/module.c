// Loadable modules, the guest's half: the host loads and relocates them (emu/module.py) and
// runs their init and exit functions here, in a kernel thread of their own, so they may sleep.
#include "types.h"
#include "defs.h"

// Laid out as emu/module.py's CALL_* offsets.
struct module_call {
	int (*fn)(void);        // init_module; exit functions return nothing (ret unused)
	long ret;
	volatile u64 done;
	char comm[16];
};

int module_call_thread(void *arg)
{
	struct module_call *c = arg;

	c->ret = c->fn();
	__atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
	return 0;
}

// What modules see of the kernel's structures (include/abi_check.c checks the headers).
MODULE_ABI(MODULE_ABI_CHECK)
