"""Architecture back ends of ftrace (the kernel's arch/*/kernel/ftrace.c); only x86-64 here."""
