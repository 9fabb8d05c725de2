// Tracepoints: one probe pointer per event, set by the host's tracers (NULL: nobody listens).
// trace_<event>() costs a load and a branch while off; the probe it calls is guest code.
#ifndef TRACEPOINT_H
#define TRACEPOINT_H
#include "types.h"

struct tracepoint {
	void (*probe)(u64 a, u64 b, u64 c);     // host-owned; published with one store
};

// struct irqaction: a handler of an irq line and its name (kernel/irq's, cut down).
struct irqaction {
	const char *name;                       // IRQACTION_NAME
};

extern struct tracepoint __tracepoint_sched_switch;    // (preempt, prev, next)
extern struct tracepoint __tracepoint_sched_wakeup;    // (task)
extern struct tracepoint __tracepoint_softirq_entry;   // (vec)
extern struct tracepoint __tracepoint_softirq_exit;    // (vec)
extern struct tracepoint __tracepoint_irq_handler_entry;   // (irq, action)
extern struct tracepoint __tracepoint_irq_handler_exit;    // (irq, action, ret)

static __always_inline void __do_trace(struct tracepoint *tp, u64 a, u64 b, u64 c)
{
	void (*probe)(u64, u64, u64) = READ_ONCE(tp->probe);

	if (unlikely(probe))
		probe(a, b, c);
}

#define trace_sched_switch(preempt, prev, next) \
	__do_trace(&__tracepoint_sched_switch, (preempt), (u64)(prev), (u64)(next))
#define trace_sched_wakeup(p)       __do_trace(&__tracepoint_sched_wakeup, (u64)(p), 0, 0)
#define trace_softirq_entry(vec)    __do_trace(&__tracepoint_softirq_entry, (vec), 0, 0)
#define trace_softirq_exit(vec)     __do_trace(&__tracepoint_softirq_exit, (vec), 0, 0)
#define trace_irq_handler_entry(irq, action) \
	__do_trace(&__tracepoint_irq_handler_entry, (irq), (u64)(action), 0)
#define trace_irq_handler_exit(irq, action, ret) \
	__do_trace(&__tracepoint_irq_handler_exit, (irq), (u64)(action), (ret))

#endif
