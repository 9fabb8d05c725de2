// Spin locks (Linux's raw spinlocks): preemption off while held.
#include "types.h"
#include "defs.h"
#include "x86.h"
#include "preempt.h"

static __always_inline void arch_spin_lock(struct spinlock *lk)
{
	int me = smp_processor_id();

	if (lk->locked && lk->cpu == me && !panicking)
		panic("spin_lock: %s already held by this cpu", lk->name);
	while (__atomic_exchange_n(&lk->locked, 1, __ATOMIC_ACQUIRE))
		cpu_relax();
	lk->cpu = me;
}

static __always_inline void arch_spin_unlock(struct spinlock *lk)
{
	if (!lk->locked)
		panic("spin_unlock: %s not held", lk->name);
	lk->cpu = -1;
	__atomic_store_n(&lk->locked, 0, __ATOMIC_RELEASE);
}

void spin_lock(struct spinlock *lk)
{
	preempt_disable();
	arch_spin_lock(lk);
}

void spin_unlock(struct spinlock *lk)
{
	arch_spin_unlock(lk);
	preempt_enable();
}

u64 spin_lock_irqsave(struct spinlock *lk)
{
	u64 flags = local_irq_save();

	preempt_disable();
	arch_spin_lock(lk);
	return flags;
}

void spin_unlock_irqrestore(struct spinlock *lk, u64 flags)
{
	arch_spin_unlock(lk);
	local_irq_restore(flags);
	preempt_enable();
}

int spin_is_locked(struct spinlock *lk)
{
	return READ_ONCE(lk->locked);
}
