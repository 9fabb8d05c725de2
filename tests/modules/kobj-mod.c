// A module with a sysfs directory of its own (/sys/kernel/kobj_mod) and an array parameter:
// `level` is read-write (its store parses a number, -EINVAL otherwise), `greeting` read-only,
// `cpus` lists the array parameter's elements.
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kobject.h>

static int weights[4];
static unsigned int nweights;
module_param_array(weights, int, &nweights, 0644);
MODULE_PARM_DESC(weights, "up to four weights");

static int level = 7;
static struct kobject *kobj;

static ssize_t level_show(struct kobject *k, struct kobj_attribute *attr, char *buf)
{
	return sprintf(buf, "%d\n", level);
}

static ssize_t level_store(struct kobject *k, struct kobj_attribute *attr, const char *buf,
			   size_t count)
{
	int v = 0, i = 0, neg = buf[0] == '-';

	for (i = neg; i < count && buf[i] >= '0' && buf[i] <= '9'; i++)
		v = v * 10 + buf[i] - '0';
	if (i == neg || (i < count && buf[i] != '\n'))
		return -EINVAL;
	level = neg ? -v : v;
	return count;
}

static ssize_t greeting_show(struct kobject *k, struct kobj_attribute *attr, char *buf)
{
	return sprintf(buf, "hello from %s, %u weights\n", kobject_name(k), nweights);
}

static struct kobj_attribute level_attr = __ATTR_RW(level);
static struct kobj_attribute greeting_attr = __ATTR_RO(greeting);

static int __init kobj_mod_init(void)
{
	int ret;

	kobj = kobject_create_and_add("kobj_mod", kernel_kobj);
	if (!kobj)
		return -ENOMEM;
	ret = sysfs_create_file(kobj, &level_attr.attr);
	if (!ret)
		ret = sysfs_create_file(kobj, &greeting_attr.attr);
	if (ret)
		kobject_put(kobj);
	return ret;
}

static void __exit kobj_mod_exit(void)
{
	kobject_put(kobj);
}

module_init(kobj_mod_init);
module_exit(kobj_mod_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("ftemu test: kobjects, sysfs attributes and an array parameter");
