/* The kernel's catch-all helpers modules use: printk, WARN_ON, min/max, ARRAY_SIZE,
 * container_of. */
#ifndef _LINUX_KERNEL_H
#define _LINUX_KERNEL_H
#include <linux/compiler.h>
#include <linux/types.h>
#include <linux/errno.h>
#include <linux/printk.h>
#include <linux/container_of.h>
#include <linux/linkage.h>
#include <linux/threads.h>

#define ARRAY_SIZE(arr) (sizeof(arr) / sizeof((arr)[0]))
#define min(a, b) ((a) < (b) ? (a) : (b))
#define max(a, b) ((a) > (b) ? (a) : (b))
#define INT_MAX		((int)(~0U >> 1))
#define UINT_MAX	(~0U)
#define LONG_MAX	((long)(~0UL >> 1))
#define ULONG_MAX	(~0UL)

int snprintf(char *buf, size_t size, const char *fmt, ...) __printf(3, 4);
int sprintf(char *buf, const char *fmt, ...) __printf(2, 3);
int vsnprintf(char *buf, size_t size, const char *fmt, __builtin_va_list args);
void __noreturn panic(const char *fmt, ...) __printf(1, 2);
void dump_stack(void);

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
