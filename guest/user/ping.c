// ping: the active half of a semaphore ping-pong with pong; sleeps 1..5 ms per round.
#include "user.h"

#define REPORT_EVERY 128        // rounds between console lines (roughly every 0.5 s)

int main(void)
{
	char line[300];
	long pid = getpid();

	for (long round = 1;; round++) {
		sem_up(SEM_PING);               // wake pong
		sem_down(SEM_PONG);             // wait for its answer
		nanosleep(1 + round % 5);
		if (round % 7 == 0)
			sched_yield();
		if (round % 32 == 0 && cmdline(line, sizeof(line) - 1) <= 0)
			printf("ping: cmdline failed\n");
		if (round % REPORT_EVERY == 0)
			printf("ping: pid %ld round %ld\n", pid, round);
	}
}
