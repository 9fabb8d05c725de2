// The host's file requests as a guest task (ftemu mount): a host process that opens one of
// the guest's files is, for the guest, this kernel thread, woken for the request and asleep
// again once it has run, as the process would be scheduled on Linux (so its sched events and
// its schedule() calls are in the trace). The host names it after the process and sets
// requester_kick; CPU 0's tick wakes it (making it the first time), as hotplugd's requests.
#include "types.h"
#include "defs.h"
#include "percpu.h"
#include "task.h"

struct task *volatile requester_task;   // the host reads it
volatile int requester_kick;            // set by the host, cleared by the tick

static int requester_thread(void *arg)
{
	for (;;) {
		current->state = TASK_INTERRUPTIBLE;
		schedule();
	}
	return 0;
}

// CPU 0's tick: a request arrived.
void requester_poll(void)
{
	if (!READ_ONCE(requester_kick))
		return;
	requester_kick = 0;
	if (requester_task)
		wake_up_process(requester_task);
	else
		requester_task = kernel_thread(requester_thread, NULL, "requester");
}
