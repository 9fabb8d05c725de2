// Shadow variables (kernel/livepatch/shadow.c): data attached to an existing object by
// <obj, id>, kept in one list under a spinlock; constructors run under it, as in the kernel.
#include "types.h"
#include "defs.h"

struct klp_shadow {
	struct klp_shadow *next;        // shadow_lock
	void *obj;
	unsigned long id;
	u64 data[];
};

typedef int (*klp_shadow_ctor_t)(void *obj, void *shadow_data, void *ctor_data);
typedef void (*klp_shadow_dtor_t)(void *obj, void *shadow_data);

static struct spinlock shadow_lock = SPINLOCK_INIT("klp_shadow");
static struct klp_shadow *shadows;      // shadow_lock

static struct klp_shadow *shadow_find(void *obj, unsigned long id)
{
	for (struct klp_shadow *s = shadows; s; s = s->next)
		if (s->obj == obj && s->id == id)
			return s;
	return NULL;
}

void *klp_shadow_get(void *obj, unsigned long id)
{
	u64 flags = spin_lock_irqsave(&shadow_lock);
	struct klp_shadow *s = shadow_find(obj, id);

	spin_unlock_irqrestore(&shadow_lock, flags);
	return s ? s->data : NULL;
}

static void *shadow_get_or_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp,
				 klp_shadow_ctor_t ctor, void *ctor_data, bool warn_on_exist)
{
	struct klp_shadow *s, *new;
	u64 flags;

	if (klp_shadow_get(obj, id) && !warn_on_exist)
		return klp_shadow_get(obj, id);
	new = kzalloc(sizeof(*new) + size, gfp);
	if (!new)
		return NULL;
	flags = spin_lock_irqsave(&shadow_lock);
	s = shadow_find(obj, id);
	if (s) {                                // raced, or a duplicate
		spin_unlock_irqrestore(&shadow_lock, flags);
		kfree(new);
		if (warn_on_exist) {
			printk("\0014Duplicate shadow variable <%p, %lx>\n", obj, id);   // WARN(1, ...)
			return NULL;
		}
		return s->data;
	}
	new->obj = obj;
	new->id = id;
	if (ctor) {
		int err = ctor(obj, new->data, ctor_data);
		if (err) {
			spin_unlock_irqrestore(&shadow_lock, flags);
			printk("\0013livepatch: Failed to construct shadow variable <%p, %lx> (%d)\n",
			       obj, id, err);
			kfree(new);
			return NULL;
		}
	}
	new->next = shadows;
	shadows = new;
	spin_unlock_irqrestore(&shadow_lock, flags);
	return new->data;
}

void *klp_shadow_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp,
		       klp_shadow_ctor_t ctor, void *ctor_data)
{
	return shadow_get_or_alloc(obj, id, size, gfp, ctor, ctor_data, true);
}

void *klp_shadow_get_or_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp,
			      klp_shadow_ctor_t ctor, void *ctor_data)
{
	return shadow_get_or_alloc(obj, id, size, gfp, ctor, ctor_data, false);
}

// Unlink every shadow matching (obj or any when all, id), calling dtor on each.
static void shadow_free(void *obj, unsigned long id, klp_shadow_dtor_t dtor, bool all)
{
	u64 flags = spin_lock_irqsave(&shadow_lock);
	struct klp_shadow **pp = &shadows;

	while (*pp) {
		struct klp_shadow *s = *pp;
		if (s->id == id && (all || s->obj == obj)) {
			*pp = s->next;
			if (dtor)
				dtor(s->obj, s->data);
			kfree(s);
			if (!all)
				break;
		} else {
			pp = &s->next;
		}
	}
	spin_unlock_irqrestore(&shadow_lock, flags);
}

void klp_shadow_free(void *obj, unsigned long id, klp_shadow_dtor_t dtor)
{
	shadow_free(obj, id, dtor, false);
}

void klp_shadow_free_all(unsigned long id, klp_shadow_dtor_t dtor)
{
	shadow_free(NULL, id, dtor, true);
}
