/* seq_file: formatted output into the buffer of a /proc file being read (guest/seq_file.c;
 * the layout is the guest's, checked by guest/include/abi_check.c). */
#ifndef _LINUX_SEQ_FILE_H
#define _LINUX_SEQ_FILE_H
#include <linux/compiler.h>
#include <linux/types.h>

struct seq_file {
	char *buf;
	size_t size;
	size_t count;
};

__printf(2, 3) void seq_printf(struct seq_file *m, const char *fmt, ...);
void seq_puts(struct seq_file *m, const char *s);

#endif
