// System calls: do_syscall_64 dispatches on the number (Linux's where Linux has one).
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "percpu.h"
#include "preempt.h"
#include "task.h"
#include "traps.h"

#define WRITE_MAX 256   // bytes per write(), printed in one piece

static long sys_write(int fd, const char *ubuf, u64 len)
{
	char buf[WRITE_MAX];

	if (fd != 1 && fd != 2)
		return -EINVAL;
	if (len > WRITE_MAX)
		len = WRITE_MAX;
	if (copy_from_user(buf, ubuf, len) < 0)
		return -EFAULT;
	console_lock();
	console_write(buf, len);
	console_unlock();
	return len;
}

static long sys_nanosleep(long ms)
{
	if (ms < 0 || ms > 10000)
		return -EINVAL;
	msleep(ms);
	return 0;
}

// Copy the kernel command line (as cmdline_proc_show formats it) to the user.
static long sys_cmdline(char *ubuf, u64 len)
{
	char buf[BP_CMDLINE_MAX + 64];
	struct seq_file m = { buf, sizeof(buf), 0 };

	cmdline_proc_show(&m, NULL);
	if (m.count > sizeof(buf))
		m.count = sizeof(buf);
	if (len > m.count)
		len = m.count;
	if (copy_to_user(ubuf, buf, len) < 0)
		return -EFAULT;
	return len;
}

static long sys_spawn(const char *uname)
{
	char name[TASK_COMM_LEN];

	for (int i = 0; i < TASK_COMM_LEN; i++) {
		if (copy_from_user(&name[i], uname + i, 1) < 0)
			return -EFAULT;
		if (!name[i])
			return user_spawn(name);
	}
	return -EINVAL;
}

// SYSCALL_DEFINE0(getpid), under the kernel's name, so a live patch of the syscall finds it
// (the guest has no thread groups: a task's tgid is its pid).
noinline long __x64_sys_getpid(const struct pt_regs *regs)
{
	return current->pid;
}

// Entered from entry_SYSCALL_64 with irqs off; the result goes to regs->ax.
long do_syscall_64(struct pt_regs *regs, unsigned long nr)
{
	long ret;

	kstat_inc(KSTAT_SYSCALLS);
	local_irq_enable();
	switch (nr) {
	case SYS_write:
		ret = sys_write(regs->di, (const char *)regs->si, regs->dx);
		break;
	case SYS_sched_yield:
		sched_yield();
		ret = 0;
		break;
	case SYS_nanosleep:
		ret = sys_nanosleep(regs->di);
		break;
	case SYS_getpid:
		ret = __x64_sys_getpid(regs);
		break;
	case SYS_exit:
		do_exit(regs->di);
	case SYS_cmdline:
		ret = sys_cmdline((char *)regs->di, regs->si);
		break;
	case SYS_cpu_down:
		ret = cpu_down(regs->di);
		break;
	case SYS_cpu_up:
		ret = cpu_up(regs->di);
		break;
	case SYS_sem_up:
		ret = sys_sem_op(regs->di, 1);
		break;
	case SYS_sem_down:
		ret = sys_sem_op(regs->di, 0);
		break;
	case SYS_spawn:
		ret = sys_spawn((const char *)regs->di);
		break;
	default:
		ret = -ENOSYS;
		break;
	}
	regs->ax = ret;
	return ret;
}

// Last kernel work before user mode (irqs off): reschedule while asked to.
void exit_to_user_mode_prepare(struct pt_regs *regs)
{
	while (need_resched()) {
		local_irq_enable();
		schedule();
		local_irq_disable();
	}
	klp_update_patch_state(current);        // return to user space: a livepatch safe point
}
