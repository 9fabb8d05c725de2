/* Kernel live patching: struct klp_patch / klp_object / klp_func, klp_enable_patch,
 * klp_state and the shadow variables. The external fields are the kernel's; the internal
 * ones are what the guest's klp keeps (offsets KLP_* in memlayout.h, read by the host). */
#ifndef _LINUX_LIVEPATCH_H
#define _LINUX_LIVEPATCH_H
#include <linux/compiler.h>
#include <linux/types.h>
#include <linux/module.h>
#include <linux/gfp.h>

struct klp_object;

struct klp_func {
	/* external */
	const char *old_name;
	void *new_func;
	unsigned long old_sympos;       /* 0 or 1: the only one; n: the n-th of that name */
	/* internal */
	void *old_func;
	struct klp_func *stack_next;
	unsigned long old_size, new_size;
	bool nop;
	bool patched;
	bool transition;
};

struct klp_callbacks {
	int (*pre_patch)(struct klp_object *obj);
	void (*post_patch)(struct klp_object *obj);
	void (*pre_unpatch)(struct klp_object *obj);
	void (*post_unpatch)(struct klp_object *obj);
	bool post_unpatch_enabled;
};

struct klp_object {
	/* external */
	const char *name;               /* NULL: vmlinux */
	struct klp_func *funcs;
	struct klp_callbacks callbacks;
	/* internal */
	struct module *mod;
	bool dynamic;
	bool patched;
};

struct klp_state {
	unsigned long id;
	unsigned int version;
	void *data;
};

struct klp_patch {
	/* external */
	struct module *mod;
	struct klp_object *objs;
	struct klp_state *states;
	bool replace;
	/* internal */
	bool enabled;
	bool forced;
};

#define klp_for_each_object_static(patch, obj) \
	for (obj = (patch)->objs; (obj)->funcs || (obj)->name; obj++)
#define klp_for_each_func_static(obj, func) \
	for (func = (obj)->funcs; func && ((func)->old_name || (func)->new_func || (func)->old_sympos); func++)

int klp_enable_patch(struct klp_patch *patch);

struct klp_state *klp_get_state(struct klp_patch *patch, unsigned long id);
struct klp_state *klp_get_prev_state(unsigned long id);

typedef int (*klp_shadow_ctor_t)(void *obj, void *shadow_data, void *ctor_data);
typedef void (*klp_shadow_dtor_t)(void *obj, void *shadow_data);

void *klp_shadow_get(void *obj, unsigned long id);
void *klp_shadow_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp_flags,
		       klp_shadow_ctor_t ctor, void *ctor_data);
void *klp_shadow_get_or_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp_flags,
			      klp_shadow_ctor_t ctor, void *ctor_data);
void klp_shadow_free(void *obj, unsigned long id, klp_shadow_dtor_t dtor);
void klp_shadow_free_all(unsigned long id, klp_shadow_dtor_t dtor);

#endif
