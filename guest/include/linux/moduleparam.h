/* Module parameters: module_param() leaves a struct kernel_param in section "__param"; the
 * loader (emu/params.py) sets it from insmod's name=value arguments. */
#ifndef _LINUX_MODULEPARAM_H
#define _LINUX_MODULEPARAM_H
#include <linux/compiler.h>
#include <linux/types.h>

struct kernel_param {
	const char *name;
	void *arg;
	const char *type;       /* "int", "bool", "charp", ... */
	unsigned short perm;
};

/* The C type of each parameter type, checked at compile time as the kernel does. */
typedef bool __param_type_bool;
typedef bool __param_type_invbool;
typedef int __param_type_int;
typedef unsigned int __param_type_uint;
typedef long __param_type_long;
typedef unsigned long __param_type_ulong;
typedef short __param_type_short;
typedef unsigned short __param_type_ushort;
typedef unsigned char __param_type_byte;
typedef unsigned int __param_type_hexint;
typedef char *__param_type_charp;

#define __MODULE_INFO(tag, name, info)					\
	static const char __UNIQUE_ID(name)[] __used			\
	__section(".modinfo") __aligned(1) = __stringify(tag) "=" info

#define MODULE_PARM_DESC(_parm, desc) \
	__MODULE_INFO(parm, _parm, #_parm ":" desc)

#define module_param_named(name, value, type, perm)			\
	static inline __param_type_##type *__check_##name(void)		\
	{ return &(value); }						\
	static const char __param_str_##name[] = #name;			\
	static struct kernel_param __param_##name __used		\
	__section("__param") __aligned(sizeof(void *)) =		\
	{ __param_str_##name, &(value), #type, perm };			\
	__MODULE_INFO(parmtype, name##type, #name ":" #type)

#define module_param(name, type, perm) module_param_named(name, name, type, perm)

/* An array parameter: "1,2,3" sets the first three elements and *num to 3; its
 * kernel_param's arg points here and its type reads "array of <type>". */
struct kparam_array {
	unsigned int max;
	unsigned int elemsize;
	unsigned int *num;
	void *elem;
};

#define module_param_array_named(name, array, type, nump, perm)		\
	static inline __param_type_##type *__check_##name(void)		\
	{ return &(array)[0]; }						\
	static const struct kparam_array __param_arr_##name =		\
	{ sizeof(array) / sizeof((array)[0]), sizeof((array)[0]), nump, (array) }; \
	static const char __param_str_##name[] = #name;			\
	static struct kernel_param __param_##name __used		\
	__section("__param") __aligned(sizeof(void *)) =		\
	{ __param_str_##name, (void *)&__param_arr_##name, "array of " #type, perm }; \
	__MODULE_INFO(parmtype, name##type, #name ":array of " #type)

#define module_param_array(name, type, nump, perm)			\
	module_param_array_named(name, name, type, nump, perm)

#endif
