// init (pid 1): the first user task. Starts the workload, then idles in sleeps.
#include "user.h"

int main(void)
{
	printf("init: up\n");
	spawn("ping");
	spawn("pong");
	spawn("faulter");
	for (;;)
		nanosleep(100);
}
