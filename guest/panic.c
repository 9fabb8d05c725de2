// panic(): stop the machine with a message and a frame-pointer backtrace.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "percpu.h"

volatile int panicking;                 // set once, by the first CPU to panic
static volatile int panic_cpu = -1;
extern int lapic_usable;
extern char _text[], _end[];

static int kernel_stack_addr(u64 a)
{
	return a >= (u64)_text && a < (u64)_end && (a & 7) == 0;
}

// Print the return addresses on the rbp chain starting at fp.
static notrace void print_backtrace(u64 fp)
{
	char line[48];

	console_write("Call Trace:\n", 12);
	for (int depth = 0; depth < 32 && kernel_stack_addr(fp); depth++) {
		u64 ret = ((u64 *)fp)[1];
		if (ret == 0)
			break;
		int n = snprintf(line, sizeof(line), "  %pS\n", (void *)ret);
		console_write(line, n);
		fp = ((u64 *)fp)[0];
	}
}

notrace void dump_stack(void)
{
	print_backtrace(read_rbp());
}

notrace void __noreturn poweroff(u32 code)
{
	outl(EXIT_PORT, code);
	for (;;) {
		cli();
		hlt();
	}
}

void __noreturn panic(const char *fmt, ...)
{
	char buf[200];
	va_list ap;
	int me, n;

	cli();
	me = smp_processor_id();
	if (__atomic_exchange_n(&panicking, 1, __ATOMIC_SEQ_CST)) {
		if (panic_cpu != me)
			play_dead();    // another CPU is already panicking
		console_write("panic: recursive panic\n", 23);
		poweroff(EXIT_PANIC);
	}
	panic_cpu = me;
	if (lapic_usable)
		lapic_send_ipi_others(APIC_DM_NMI);     // default_do_nmi parks them
	n = snprintf(buf, sizeof(buf), "panic: ");
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	console_write(buf, n);
	dump_stack();
	poweroff(EXIT_PANIC);
}
