/* Loadable modules: struct module, THIS_MODULE, MODULE_* information. */
#ifndef _LINUX_MODULE_H
#define _LINUX_MODULE_H
#include <linux/compiler.h>
#include <linux/types.h>
#include <linux/errno.h>
#include <linux/init.h>
#include <linux/moduleparam.h>
#include <linux/printk.h>
/* What the kernel's module.h brings in through its own includes, which modules rely on. */
#include <linux/kobject.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/stat.h>
#include <linux/workqueue.h>

#define MODULE_NAME_LEN 56

enum module_state {
	MODULE_STATE_LIVE,      /* Normal state. */
	MODULE_STATE_COMING,    /* Full formed, running module_init. */
	MODULE_STATE_GOING,     /* Going away. */
	MODULE_STATE_UNFORMED,  /* Still setting it up. */
};

/* Laid out as emu/module.py's MOD_* offsets; the loader fills it in. */
struct module {
	char name[MODULE_NAME_LEN];
	enum module_state state;
	int refcnt;
};

extern struct module __this_module;
#define THIS_MODULE (&__this_module)

#define MODULE_INFO(tag, info) __MODULE_INFO(tag, tag, info)
#define MODULE_LICENSE(_license) MODULE_INFO(license, _license)
#define MODULE_AUTHOR(_author) MODULE_INFO(author, _author)
#define MODULE_DESCRIPTION(_description) MODULE_INFO(description, _description)
#define MODULE_VERSION(_version) MODULE_INFO(version, _version)
#define MODULE_ALIAS(_alias) MODULE_INFO(alias, _alias)

#define EXPORT_SYMBOL(sym)
#define EXPORT_SYMBOL_GPL(sym)

#endif
