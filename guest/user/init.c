// init (pid 1): the first user task. Starts the workload, then idles in sleeps.
#include "user.h"

#define EINVAL 22
#define EBUSY 16

int main(void)
{
	printf("init: up\n");
	spawn("ping");
	spawn("pong");
	spawn("faulter");
	if (spawn("nosuch") >= 0 || cpu_down(0) != -EBUSY || cpu_up(-1) != -EINVAL ||
	    cpu_down(99) != -EINVAL || sem_up(99) != -EINVAL || write(1, (void *)0x10, 4) >= 0)
		printf("init: bad syscall arguments were accepted\n");
	for (;;)
		nanosleep(100);
}
