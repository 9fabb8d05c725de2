/* Basic types for modules, with the kernel's names (the guest kernel's own layouts). */
#ifndef _LINUX_TYPES_H
#define _LINUX_TYPES_H

#include "../../types.h"     /* the kernel's own u8..u64, size_t, NULL, READ_ONCE ... */
typedef long long loff_t;

struct list_head {
	struct list_head *next, *prev;
};

struct hlist_head {
	struct hlist_node *first;
};

struct hlist_node {
	struct hlist_node *next, **pprev;
};

typedef struct {
	int counter;
} atomic_t;

#endif
