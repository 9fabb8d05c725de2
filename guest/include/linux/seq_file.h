/* seq_file: formatted output into the buffer of a /proc file being read. */
#ifndef _LINUX_SEQ_FILE_H
#define _LINUX_SEQ_FILE_H
#include <linux/compiler.h>
#include "../../defs.h"         /* struct seq_file, seq_printf, seq_puts: the kernel's own */

#endif
