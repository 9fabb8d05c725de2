// In-kernel tests run at boot before init (as xv6's usertests): {fn, "name"}.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "percpu.h"
#include "preempt.h"
#include "task.h"

#define CHECK(cond) do { if (!(cond)) return 0; } while (0)

static int test_kalloc(void)
{
	u64 before = nr_free_pages();
	u8 *a = kalloc(), *b = kalloc();

	CHECK(a && b && a != b);
	CHECK((u64)a % 4096 == 0 && (u64)b % 4096 == 0);
	CHECK(a[0] == 0 && a[4095] == 0);
	memset(a, 0xab, 4096);
	CHECK(nr_free_pages() == before - 2);
	kfree(a);
	kfree(b);
	CHECK(nr_free_pages() == before);
	return 1;
}

static __printf(2, 3) int check_fmt(const char *want, const char *fmt, ...)
{
	char buf[64];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return strcmp(buf, want) == 0;
}

static int test_printk_format(void)
{
	char small[4];

	CHECK(check_fmt("-42 42 beef", "%d %u %x", -42, 42u, 0xbeef));
	CHECK(check_fmt("ffffffff81000000", "%lx", 0xffffffff81000000ul));
	CHECK(check_fmt("-9000000000 18000000000", "%ld %lu", -9000000000l, 18000000000ul));
	CHECK(check_fmt("hi x 100%", "%s %c 100%%", "hi", 'x'));
	CHECK(check_fmt("0x00000000deadbeef", "%p", (void *)0xdeadbeef));
	CHECK(check_fmt("[   7][7   ][0007][ab  ]", "[%4d][%-4d][%04d][%-4s]", 7, 7, 7, "ab"));
	CHECK(check_fmt("-0042", "%05d", -42));
	CHECK(snprintf(small, sizeof(small), "%s", "overflow") == 8 && strcmp(small, "ove") == 0);
	return 1;
}

static int test_preempt_count(void)
{
	CHECK(preempt_count() == 0 && in_task());
	preempt_disable();
	preempt_disable();
	CHECK((preempt_count() & PREEMPT_MASK) == 2);
	preempt_count_add(SOFTIRQ_OFFSET);
	CHECK(softirq_count() == SOFTIRQ_OFFSET && in_interrupt() && !in_hardirq());
	preempt_count_add(HARDIRQ_OFFSET);
	CHECK(in_hardirq() && !in_nmi());
	preempt_count_add(NMI_OFFSET);
	CHECK(in_nmi() && preempt_count() == NMI_OFFSET + HARDIRQ_OFFSET + SOFTIRQ_OFFSET + 2);
	preempt_count_sub(NMI_OFFSET + HARDIRQ_OFFSET + SOFTIRQ_OFFSET);
	preempt_enable();
	preempt_enable();
	CHECK(preempt_count() == 0);
	return 1;
}

static int test_rcu_watching(void)
{
	u64 flags;
	int ok = 1;

	CHECK(rcu_is_watching());
	flags = local_irq_save();
	rcu_idle_enter();
	ok &= !rcu_is_watching();
	ct_irq_enter();                 // an interrupt taken in idle
	ok &= rcu_is_watching();
	ct_nmi_enter();                 // an NMI inside it
	ok &= rcu_is_watching();
	ct_nmi_exit();
	ct_irq_exit();
	ok &= !rcu_is_watching();
	rcu_idle_exit();
	ok &= rcu_is_watching();
	local_irq_restore(flags);
	for (int cpu = 0; cpu < NCPU; cpu++)
		if (!cpu_online(cpu))
			ok &= cpu_of(cpu)->rcu_watching == 0;
	return ok;
}

static volatile int timer_fired;

static void test_timer_fn(struct timer_list *t)
{
	timer_fired++;
}

static int test_timer_list(void)
{
	struct timer_list a, b;
	u64 j0 = jiffies;

	timer_fired = 0;
	init_timer(&a, test_timer_fn);
	init_timer(&b, test_timer_fn);
	a.expires = jiffies + 2;
	b.expires = jiffies + 3;
	add_timer(&a);
	add_timer(&b);
	CHECK(del_timer(&b) == 1);
	msleep(5);
	CHECK(jiffies - j0 >= 5);
	CHECK(timer_fired == 1 && !a.pending);
	CHECK(del_timer_sync(&a) == 0);
	return 1;
}

static struct semaphore test_sem;
static volatile int helper_ran;

static int sem_helper(void *arg)
{
	msleep(2);
	helper_ran = 1;
	up(&test_sem);
	return 0;
}

static int test_semaphore(void)
{
	helper_ran = 0;
	sema_init(&test_sem, 0);
	CHECK(down_trylock(&test_sem) != 0);
	kernel_thread(sem_helper, NULL, "sem_helper");
	down(&test_sem);                // sleeps until the helper's up()
	CHECK(helper_ran);
	up(&test_sem);
	CHECK(down_trylock(&test_sem) == 0);
	return 1;
}

static int test_context_switch(void)
{
	u64 n = nr_context_switches();

	msleep(1);
	sched_yield();
	return nr_context_switches() > n;
}

static volatile int call_count;

static void count_call(void *arg)
{
	__atomic_fetch_add(&call_count, (int)(u64)arg, __ATOMIC_SEQ_CST);
}

static int test_smp_call_function(void)
{
	call_count = 0;
	smp_call_function(count_call, (void *)1, 1);
	return call_count == num_online_cpus() - 1;
}

static int test_synchronize_rcu(void)
{
	synchronize_rcu();
	synchronize_rcu();
	return 1;
}

static int test_cmdline(void)
{
	char buf[BP_CMDLINE_MAX + 8], want[BP_CMDLINE_MAX + 8];
	struct seq_file m = { buf, sizeof(buf), 0 };

	CHECK(cmdline_proc_show(&m, NULL) == 0);
	snprintf(want, sizeof(want), "%s\n", saved_command_line);
	CHECK(m.count == strlen(want) && memcmp(buf, want, m.count) == 0);
	return 1;
}

static int test_kstat(void)
{
	CHECK(kstat[0][KSTAT_TIMER_IRQS] > 0);
	CHECK(kstat[0][KSTAT_CPU_ONLINE] == 1);
	CHECK(cpu_online(0));
	return 1;
}

static int test_hotplug(void)
{
	int cpu = nr_cpus_present - 1;

	CHECK(cpu_down(0) == -EBUSY && cpu_down(NCPU) == -EINVAL && cpu_up(-1) == -EINVAL);
	CHECK(hotplug_request(0, 0) == -EBUSY && hotplug_request(NCPU, 1) == -EINVAL);
	if (cpu == 0)
		return 1;
	CHECK(cpu_down(cpu) == 0 && !cpu_online(cpu));
	CHECK(kstat[cpu][KSTAT_CPU_OFFLINE] >= 1 && cpu_of(cpu)->rcu_watching == 0);
	CHECK(cpu_up(cpu) == 0 && cpu_online(cpu));
	return 1;
}

static int test_user_access(void)
{
	return !access_ok((void *)USER_CODE_VA, 1) && uprog_find("init", &(u64){ 0 });
}

static struct {
	int (*fn)(void);
	const char *name;
} tests[] = {
	{ test_kalloc, "kalloc" },
	{ test_printk_format, "printk_format" },
	{ test_preempt_count, "preempt_count" },
	{ test_rcu_watching, "rcu_watching" },
	{ test_timer_list, "timer_list" },
	{ test_semaphore, "semaphore" },
	{ test_context_switch, "context_switch" },
	{ test_smp_call_function, "smp_call_function" },
	{ test_synchronize_rcu, "synchronize_rcu" },
	{ test_cmdline, "cmdline" },
	{ test_kstat, "kstat" },
	{ test_hotplug, "hotplug" },
	{ test_user_access, "user_access" },
};

void run_kernel_tests(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(tests); i++) {
		if (!tests[i].fn()) {
			printk("FAIL: %s\n", tests[i].name);
			panic("kernel test %s failed", tests[i].name);
		}
	}
	printk("ALL TESTS PASSED\n");
}
