// The tracepoints' probe pointers (see tracepoint.h); the host's tracers fill them in.
#include "types.h"
#include "tracepoint.h"

struct tracepoint __tracepoint_sched_switch;
struct tracepoint __tracepoint_sched_wakeup;
struct tracepoint __tracepoint_softirq_entry;
struct tracepoint __tracepoint_softirq_exit;
struct tracepoint __tracepoint_irq_handler_entry;
struct tracepoint __tracepoint_irq_handler_exit;
