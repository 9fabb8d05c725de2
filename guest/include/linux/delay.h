/* Sleeping delays (guest/timer.c). */
#ifndef _LINUX_DELAY_H
#define _LINUX_DELAY_H

void msleep(unsigned int msecs);

#endif
