/* Compiler helpers modules use (attributes, READ_ONCE, container_of). */
#ifndef _LINUX_COMPILER_H
#define _LINUX_COMPILER_H
#include <linux/types.h>      /* notrace, READ_ONCE, offsetof ... come with the basic types */

#define __init __attribute__((section(".init.text"), cold))
#define __exit __attribute__((section(".exit.text"), cold))
#define __initdata __attribute__((section(".init.data")))
#define __maybe_unused __attribute__((unused))
#define __used __attribute__((used))
#define __always_unused __attribute__((unused))
#define __section(s) __attribute__((section(s)))
#define __weak __attribute__((weak))
#define __cold __attribute__((cold))
#define likely(x) __builtin_expect(!!(x), 1)


#define __stringify_1(x...) #x
#define __stringify(x...) __stringify_1(x)
#define ___PASTE(a, b) a##b
#define __PASTE(a, b) ___PASTE(a, b)
#define __UNIQUE_ID(prefix) __PASTE(__PASTE(__UNIQUE_ID_, prefix), __COUNTER__)


#endif
