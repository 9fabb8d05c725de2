// A module that defines names the guest kernel keeps internal (its task struct, page
// allocator, spin locks, memory-layout constants): the module headers must not know them,
// as Linux's do not. It uses the kernel API around them: completion, mutex, list, kzalloc.
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/string.h>

#define NCPU 3
#define KSTACK_SIZE 5
struct task { int n; struct list_head list; };
struct spinlock { int held; };
static struct spinlock spinlock = { 1 };
static LIST_HEAD(tasks);
static DEFINE_MUTEX(tasks_mutex);
static DECLARE_COMPLETION(tasks_done);

static void *kalloc(int n)
{
	struct task *t = kzalloc(sizeof(*t), GFP_KERNEL);

	if (t)
		t->n = n;
	return t;
}

static int namespace_init(void)
{
	struct task *t, *tmp;
	char name[8];
	int sum = 0;

	mutex_lock(&tasks_mutex);
	for (int i = 0; i < NCPU; i++) {
		t = kalloc(i * KSTACK_SIZE);
		if (!t)
			return -ENOMEM;
		list_add_tail(&t->list, &tasks);
	}
	list_for_each_entry_safe(t, tmp, &tasks, list) {
		sum += t->n;
		list_del(&t->list);
		kfree(t);
	}
	mutex_unlock(&tasks_mutex);
	complete(&tasks_done);
	wait_for_completion(&tasks_done);
	strlcpy(name, "tasks", sizeof(name));
	pr_info("%s: sum %d, spinlock %d, done %d\n", name, sum, spinlock.held,
		completion_done(&tasks_done));
	return 0;
}

static void namespace_exit(void)
{
}

module_init(namespace_init);
module_exit(namespace_exit);
MODULE_LICENSE("GPL");
