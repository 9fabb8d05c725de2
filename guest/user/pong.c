// pong: answers ping over the semaphores; yields and naps now and then.
#include "user.h"

#define REPORT_EVERY 128

int main(void)
{
	long pid = getpid();

	for (long round = 1;; round++) {
		sem_down(SEM_PING);
		if (getpid() != pid)
			printf("pong: getpid changed\n");
		if (round % 3 == 0)
			sched_yield();
		if (round % 11 == 0)
			nanosleep(1 + round % 3);
		sem_up(SEM_PONG);
		if (round % REPORT_EVERY == 0)
			printf("pong: pid %ld round %ld\n", pid, round);
	}
}
