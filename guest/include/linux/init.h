/* module_init / module_exit: the entry points the module loader calls. */
#ifndef _LINUX_INIT_H
#define _LINUX_INIT_H
#include <linux/compiler.h>

typedef int (*initcall_t)(void);
typedef void (*exitcall_t)(void);

/* As the kernel does for loadable modules: init_module/cleanup_module alias the functions. */
#define module_init(initfn)						\
	static inline initcall_t __maybe_unused __inittest(void)	\
	{ return initfn; }						\
	int init_module(void) __attribute__((copy(initfn), alias(#initfn)))

#define module_exit(exitfn)						\
	static inline exitcall_t __maybe_unused __exittest(void)	\
	{ return exitfn; }						\
	void cleanup_module(void) __attribute__((copy(exitfn), alias(#exitfn)))

#endif
