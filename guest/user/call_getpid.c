// call_getpid: calls getpid(2) over and over, as the kernel's test_klp-call_getpid does while a
// live patch of the syscall is loaded, napping now and then; exits after CALLS calls (the
// guest has no signals to stop it with).
#include "user.h"

#define CALLS 100000
#define NAP_EVERY 500           // calls between 1 ms sleeps

int main(void)
{
	for (long i = 1; i <= CALLS; i++) {
		getpid();
		if (i % NAP_EVERY == 0)
			nanosleep(1);
	}
	return 0;
}
