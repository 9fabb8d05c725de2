/* sysfs attributes: one file each in a kobject's directory (the show/store buffer is a page). */
#ifndef _LINUX_SYSFS_H
#define _LINUX_SYSFS_H
#include <linux/compiler.h>
#include <linux/types.h>
#include <linux/stat.h>

struct kobject;

/* Laid out as memlayout.h's SYSFS_ATTR_* offsets. */
struct attribute {
	const char *name;
	umode_t mode;
};

#define __ATTR(_name, _mode, _show, _store) {				\
	.attr = { .name = __stringify(_name), .mode = (_mode) },	\
	.show = _show,							\
	.store = _store,						\
}
#define __ATTR_RO(_name) __ATTR(_name, 0444, _name##_show, NULL)
#define __ATTR_RO_MODE(_name, _mode) __ATTR(_name, _mode, _name##_show, NULL)
#define __ATTR_WO(_name) __ATTR(_name, 0200, NULL, _name##_store)
#define __ATTR_RW(_name) __ATTR(_name, 0644, _name##_show, _name##_store)
#define __ATTR_RW_MODE(_name, _mode) __ATTR(_name, _mode, _name##_show, _name##_store)

int sysfs_create_file(struct kobject *kobj, const struct attribute *attr);
void sysfs_remove_file(struct kobject *kobj, const struct attribute *attr);

#endif
