/* The kernel's catch-all helpers modules use: printk, WARN_ON, min/max, ARRAY_SIZE. */
#ifndef _LINUX_KERNEL_H
#define _LINUX_KERNEL_H
#include <linux/compiler.h>
#include <linux/types.h>
#include <linux/errno.h>
#include <linux/printk.h>

#define min(a, b) ((a) < (b) ? (a) : (b))
#define max(a, b) ((a) > (b) ? (a) : (b))


#define WARN_ON(condition) ({						\
	int __ret_warn_on = !!(condition);				\
	if (unlikely(__ret_warn_on))					\
		printk(KERN_WARNING "WARNING: at %s:%d %s\n",		\
		       __FILE__, __LINE__, __func__);			\
	unlikely(__ret_warn_on);					\
})
#define WARN_ON_ONCE(condition) WARN_ON(condition)
#define WARN(condition, fmt, ...) ({					\
	int __ret_warn = !!(condition);					\
	if (unlikely(__ret_warn))					\
		printk(KERN_WARNING fmt, ##__VA_ARGS__);		\
	unlikely(__ret_warn);						\
})

#endif
