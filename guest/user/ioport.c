// ioport: port I/O from user mode (here on the hypercall port), which the CPU refuses with
// a #GP (IOPL 0, no I/O bitmap): the kernel kills it. Not started by init; tests spawn it.
#include "user.h"

int main(void)
{
	printf("ioport: out to port 0xe0\n");
	__asm__ volatile("outb %b0, $0xe0" : : "a"(1));
	printf("ioport: still alive?\n");
	return 1;
}
