/* kobjects: directories under /sys (guest/kobject.c); the host's pseudo-file tree shows them
 * and runs an attribute's show/store when its file is read or written. */
#ifndef _LINUX_KOBJECT_H
#define _LINUX_KOBJECT_H
#include <linux/types.h>
#include <linux/sysfs.h>

/* Laid out as memlayout.h's KOBJ_* offsets (the host reads the name and the parent). */
struct kobject {
	const char *name;
	struct kobject *parent;
	int refcount;           /* the kref: the last kobject_put removes and frees it */
	int state_in_sysfs;
};

struct kobj_attribute {
	struct attribute attr;
	ssize_t (*show)(struct kobject *kobj, struct kobj_attribute *attr, char *buf);
	ssize_t (*store)(struct kobject *kobj, struct kobj_attribute *attr,
			 const char *buf, size_t count);
};

extern struct kobject *kernel_kobj;     /* /sys/kernel */

struct kobject *kobject_create_and_add(const char *name, struct kobject *parent);
struct kobject *kobject_get(struct kobject *kobj);
void kobject_put(struct kobject *kobj);
const char *kobject_name(const struct kobject *kobj);

#endif
