// faulter: runs a little, then touches an unmapped address and is killed for it.
#include "user.h"

#define BAD_ADDR 0xdead000ul    // below USER_CODE_VA, never mapped

int main(void)
{
	for (int i = 0; i < 10; i++)
		nanosleep(2);
	printf("faulter: touching 0x%lx\n", BAD_ADDR);
	*(volatile long *)BAD_ADDR = 1;
	printf("faulter: still alive?\n");
	return 1;
}
