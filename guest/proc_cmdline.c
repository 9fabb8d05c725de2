// /proc/cmdline's and /proc/meminfo's show functions (SYS_cmdline reads the first); the
// livepatch sample and the atomic replace test replace them.
#include "types.h"
#include "defs.h"

noinline int cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s\n", saved_command_line);
	return 0;
}

noinline int meminfo_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "MemTotal:       %8lu kB\n", mem_bytes >> 10);
	seq_printf(m, "MemFree:        %8lu kB\n", nr_free_pages() * 4);
	return 0;
}
