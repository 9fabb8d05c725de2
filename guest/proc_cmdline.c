// /proc/cmdline's show function (SYS_cmdline); the livepatch sample replaces it.
#include "types.h"
#include "defs.h"

noinline int cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s\n", saved_command_line);
	return 0;
}
