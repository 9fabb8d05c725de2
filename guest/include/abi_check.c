/* Built with every guest kernel (never linked): the module headers' structures have the
 * layouts the kernel uses (memlayout.h); guest/module.c checks the kernel's own side. */
#include <linux/completion.h>
#include <linux/livepatch.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/threads.h>
#include <linux/workqueue.h>
#include "../memlayout.h"

MODULE_ABI(MODULE_ABI_CHECK)
MODULE_ABI_CHECK(struct module, state, MOD_STATE, MOD_SIZE)
MODULE_ABI_CHECK(struct module, refcnt, MOD_REFCNT, MOD_SIZE)
MODULE_ABI_CHECK(struct klp_func, stack_next, KLP_FUNC_STACK_NEXT, KLP_FUNC_SIZE)
MODULE_ABI_CHECK(struct klp_func, transition, KLP_FUNC_TRANSITION, KLP_FUNC_SIZE)
MODULE_ABI_CHECK(struct klp_object, callbacks, KLP_OBJ_CALLBACKS, KLP_OBJ_SIZE)
MODULE_ABI_CHECK(struct klp_object, mod, KLP_OBJ_MOD, KLP_OBJ_SIZE)
MODULE_ABI_CHECK(struct klp_state, data, KLP_STATE_DATA, KLP_STATE_SIZE)
MODULE_ABI_CHECK(struct klp_patch, states, KLP_PATCH_STATES, KLP_PATCH_SIZE)
MODULE_ABI_CHECK(struct klp_patch, forced, KLP_PATCH_FORCED, KLP_PATCH_SIZE)
_Static_assert(__builtin_offsetof(struct task_struct, pid) == TASK_PID, "task_struct.pid");
_Static_assert(__builtin_offsetof(struct task_struct, comm) == TASK_COMM, "task_struct.comm");
_Static_assert(__PCPU_CURRENT == PCPU_CURRENT, "get_current");
_Static_assert(NR_CPUS == NCPU, "NR_CPUS");
