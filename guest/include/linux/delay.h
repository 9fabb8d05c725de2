/* Sleeping delays: msleep (guest/timer.c). */
#ifndef _LINUX_DELAY_H
#define _LINUX_DELAY_H
#include "../../defs.h"

#endif
