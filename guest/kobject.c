// kobjects (the kernel's lib/kobject.c) and their sysfs files (fs/sysfs): a kobject is a
// directory of the host's pseudo-file tree (/sys/<parents>/<name>), an attribute one file in
// it. The host learns of both through SYSFS_PORT; reading or writing such a file runs the
// attribute's show or store here (kobj_attr_show/kobj_attr_store, called by the host).
#include "types.h"
#include "defs.h"

static struct kobject kernel_kobj_dir = { "kernel", NULL, 1, 1 };
struct kobject *kernel_kobj = &kernel_kobj_dir;         // /sys/kernel

struct sysfs_request {
	u64 op;                         // SYSFS_*
	struct kobject *kobj;
	const struct attribute *attr;
	long ret;                       // 0 or -errno, written by the host
};
_Static_assert(offsetof(struct sysfs_request, ret) == SYSFS_REQ_RET, "SYSFS_REQ_RET");

static long sysfs_request(u64 op, struct kobject *kobj, const struct attribute *attr)
{
	struct sysfs_request r = { op, kobj, attr, 0 };

	__asm__ volatile("outl %%eax, %[port]" : : "a"(0), [port] "i"(SYSFS_PORT), "D"(&r) : "memory");
	return r.ret;
}

// "/kernel/name" as kernfs names it in its warnings.
static void kobject_path(const struct kobject *kobj, char *buf, size_t size)
{
	const struct kobject *chain[8];
	int n = 0;
	size_t len = 0;

	for (; kobj && n < 8; kobj = kobj->parent)
		chain[n++] = kobj;
	buf[0] = 0;
	while (n-- > 0 && len < size)
		len += snprintf(buf + len, size - len, "/%s", chain[n]->name);
}

const char *kobject_name(const struct kobject *kobj)
{
	return kobj->name;
}

struct kobject *kobject_create_and_add(const char *name, struct kobject *parent)
{
	struct kobject *kobj = kzalloc(sizeof(*kobj), GFP_KERNEL);
	size_t n = strlen(name) + 1;
	char *copy = kmalloc(n, GFP_KERNEL);
	char path[128];
	long err;

	if (!kobj || !copy) {
		kfree(kobj);
		kfree(copy);
		return NULL;
	}
	memcpy(copy, name, n);
	kobj->name = copy;
	kobj->parent = parent;
	kobj->refcount = 1;
	err = sysfs_request(SYSFS_ADD_DIR, kobj, NULL);
	if (err) {
		if (err == -EEXIST) {
			kobject_path(kobj, path, sizeof(path));
			printk("\0014sysfs: cannot create duplicate filename '%s'\n", path);
			dump_stack();
			printk("\0013kobject_add_internal failed for %s with -EEXIST, don't try to "
			       "register things with the same name in the same directory.\n", copy);
		}
		printk("\0014kobject_create_and_add: kobject_add error: %ld\n", err);
		kfree(copy);
		kfree(kobj);
		return NULL;
	}
	kobj->state_in_sysfs = 1;
	if (parent)
		kobject_get(parent);
	return kobj;
}

struct kobject *kobject_get(struct kobject *kobj)
{
	if (kobj)
		__atomic_add_fetch(&kobj->refcount, 1, __ATOMIC_SEQ_CST);
	return kobj;
}

// The last reference removes the directory (files and all) before the memory goes.
void kobject_put(struct kobject *kobj)
{
	struct kobject *parent;

	if (!kobj || __atomic_sub_fetch(&kobj->refcount, 1, __ATOMIC_SEQ_CST))
		return;
	parent = kobj->parent;
	if (kobj->state_in_sysfs)
		sysfs_request(SYSFS_REMOVE_DIR, kobj, NULL);
	kfree(kobj->name);
	kfree(kobj);
	kobject_put(parent);
}

int sysfs_create_file(struct kobject *kobj, const struct attribute *attr)
{
	char path[128];
	long err;

	if (!kobj || !kobj->state_in_sysfs || !attr)
		return -EINVAL;
	err = sysfs_request(SYSFS_ADD_FILE, kobj, attr);
	if (err == -EEXIST) {
		kobject_path(kobj, path, sizeof(path));
		printk("\0014sysfs: cannot create duplicate filename '%s/%s'\n", path, attr->name);
		dump_stack();
	}
	return err;
}

void sysfs_remove_file(struct kobject *kobj, const struct attribute *attr)
{
	if (kobj && kobj->state_in_sysfs && attr)
		sysfs_request(SYSFS_REMOVE_FILE, kobj, attr);
}

// sysfs_ops of a kobject's kobj_attribute files: called by the host on a read or a write.
long kobj_attr_show(struct kobject *kobj, const struct attribute *attr, char *buf)
{
	struct kobj_attribute *kattr = container_of(attr, struct kobj_attribute, attr);

	return kattr->show ? kattr->show(kobj, kattr, buf) : -EIO;
}

long kobj_attr_store(struct kobject *kobj, const struct attribute *attr, const char *buf,
		     size_t count)
{
	struct kobj_attribute *kattr = container_of(attr, struct kobj_attribute, attr);

	return kattr->store ? kattr->store(kobj, kattr, buf, count) : -EIO;
}
