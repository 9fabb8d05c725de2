/* Compiler helpers modules use: attributes, READ_ONCE/WRITE_ONCE, barrier, likely. */
#ifndef _LINUX_COMPILER_H
#define _LINUX_COMPILER_H
#include <linux/types.h>

#define __init __attribute__((section(".init.text"), cold))
#define __exit __attribute__((section(".exit.text"), cold))
#define __initdata __attribute__((section(".init.data")))
#define __maybe_unused __attribute__((unused))
#define __always_unused __attribute__((unused))
#define __used __attribute__((used))
#define __section(s) __attribute__((section(s)))
#define __weak __attribute__((weak))
#define __cold __attribute__((cold))
#define __aligned(n) __attribute__((aligned(n)))
#define __packed __attribute__((packed))
#define __printf(a, b) __attribute__((format(printf, a, b)))
#define __noreturn __attribute__((noreturn))
#define __always_inline inline __attribute__((always_inline))
#define noinline __attribute__((noinline))
#define notrace __attribute__((no_instrument_function))
#define __user
#define __iomem
#define __force
#define __must_check __attribute__((warn_unused_result))

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define barrier() __asm__ volatile("" ::: "memory")
#define READ_ONCE(x) (*(const volatile __typeof__(x) *)&(x))
#define WRITE_ONCE(x, val) do { *(volatile __typeof__(x) *)&(x) = (val); } while (0)

#define __stringify_1(x...) #x
#define __stringify(x...) __stringify_1(x)
#define ___PASTE(a, b) a##b
#define __PASTE(a, b) ___PASTE(a, b)
#define __UNIQUE_ID(prefix) __PASTE(__PASTE(__UNIQUE_ID_, prefix), __COUNTER__)

#endif
