// Formatted output: vsnprintf, and printk: every record goes to the kernel log (kept by the
// host: KMSG_PORT, read as dmesg), and to the console when its level is below console_loglevel.
#include "types.h"
#include "defs.h"
#include "x86.h"

static struct spinlock console_output_lock = SPINLOCK_INIT("console_output");

struct outbuf {
	char *buf;
	size_t size;
	size_t len;     // characters produced (may exceed size)
};

static void put(struct outbuf *o, char c)
{
	if (o->len + 1 < o->size)
		o->buf[o->len] = c;
	o->len++;
}

// v in base, right-aligned in width (zero- or space-padded), '-' first if neg.
static void put_num(struct outbuf *o, u64 v, int base, int neg, int width, int zero)
{
	char tmp[24];
	int n = 0;

	do {
		tmp[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	if (neg && zero) {
		put(o, '-');
		width--;
	} else if (neg) {
		tmp[n++] = '-';
	}
	for (int i = n; i < width; i++)
		put(o, zero ? '0' : ' ');
	while (n > 0)
		put(o, tmp[--n]);
}

static void put_str(struct outbuf *o, const char *s, int width, int left)
{
	int n;

	if (!s)
		s = "(null)";
	n = strlen(s);
	if (!left)
		for (int i = n; i < width; i++)
			put(o, ' ');
	while (*s)
		put(o, *s++);
	if (left)
		for (int i = n; i < width; i++)
			put(o, ' ');
}

static const char *gfp_name(gfp_t gfp)
{
	switch (gfp) {
	case GFP_KERNEL: return "GFP_KERNEL";
	case GFP_ATOMIC: return "GFP_ATOMIC";
	case GFP_NOWAIT: return "GFP_NOWAIT";
	default: return "0x?";
	}
}

// %d %i %u %x %p %pS %pGg %s %c %%, with flags '-' '0', a width, and length l / ll / z.
// %pS prints [<address>]: the guest has no kallsyms, the host symbolises the console.
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
	struct outbuf o = { buf, size, 0 };

	for (; *fmt; fmt++) {
		int width = 0, zero = 0, left = 0, lng = 0;
		u64 v;

		if (*fmt != '%') {
			put(&o, *fmt);
			continue;
		}
		fmt++;
		for (;; fmt++) {
			if (*fmt == '0')
				zero = 1;
			else if (*fmt == '-')
				left = 1;
			else
				break;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z') {
			lng = 1;
			fmt++;
		}
		if (left)
			zero = 0;
		switch (*fmt) {
		case 'd':
		case 'i': {
			s64 x = lng ? va_arg(ap, s64) : va_arg(ap, int);
			size_t start = o.len;
			put_num(&o, x < 0 ? -(u64)x : (u64)x, 10, x < 0, left ? 0 : width, zero);
			while (left && (int)(o.len - start) < width)
				put(&o, ' ');
			break;
		}
		case 'u':
		case 'x': {
			size_t start = o.len;
			v = lng ? va_arg(ap, u64) : va_arg(ap, u32);
			put_num(&o, v, *fmt == 'u' ? 10 : 16, 0, left ? 0 : width, zero);
			while (left && (int)(o.len - start) < width)
				put(&o, ' ');
			break;
		}
		case 'p':
			if (fmt[1] == 'S') {
				fmt++;
				put(&o, '[');
				put(&o, '<');
				put_num(&o, (u64)va_arg(ap, void *), 16, 0, 16, 1);
				put(&o, '>');
				put(&o, ']');
				break;
			}
			if (fmt[1] == 'G' && fmt[2] == 'g') {   // %pGg: gfp flags by name
				put_str(&o, gfp_name(*va_arg(ap, gfp_t *)), 0, 0);
				fmt += 2;
				break;
			}
			put(&o, '0');
			put(&o, 'x');
			put_num(&o, (u64)va_arg(ap, void *), 16, 0, 16, 1);
			break;
		case 's':
			put_str(&o, va_arg(ap, const char *), width, left);
			break;
		case 'c':
			put(&o, (char)va_arg(ap, int));
			break;
		case '%':
			put(&o, '%');
			break;
		case 0:
			fmt--;
			break;
		default:
			put(&o, '%');
			put(&o, *fmt);
			break;
		}
	}
	if (size)
		buf[o.len < size ? o.len : size - 1] = 0;
	return o.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	return n;
}

// The kernel's sprintf: an unbounded snprintf (sysfs show functions write into a page).
int sprintf(char *buf, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, 0x7fffffff, fmt, ap);
	va_end(ap);
	return n;
}

// Write n bytes to the console under console_output_lock (a panicking CPU skips the lock).
void console_write(const char *s, size_t n)
{
	u64 flags = 0;
	int locked = !panicking;

	if (locked)
		flags = spin_lock_irqsave(&console_output_lock);
	for (size_t i = 0; i < n; i++)
		uart_putc(s[i]);
	if (locked)
		spin_unlock_irqrestore(&console_output_lock, flags);
}

int console_loglevel = CONSOLE_LOGLEVEL_DEFAULT;

// Hand one record to the host's kernel log.
static notrace void log_store(int level, const char *text, size_t len)
{
	__asm__ volatile("outl %%eax, %[port]"
			 : : "a"(0), [port] "i"(KMSG_PORT), "D"(text), "S"(len), "d"(level) : "memory");
}

// A leading KERN_SOH + level digit sets the level (else the default); 'c' continues a line.
int vprintk(const char *fmt, va_list ap)
{
	char buf[512];
	int n, level = MESSAGE_LOGLEVEL_DEFAULT;

	if (fmt[0] == KERN_SOH_ASCII && fmt[1]) {
		if (fmt[1] >= '0' && fmt[1] <= '7')
			level = fmt[1] - '0';
		else if (fmt[1] == 'c')
			level = LOGLEVEL_CONT;
		fmt += 2;
	}
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	if (n > (int)sizeof(buf) - 1)
		n = sizeof(buf) - 1;
	log_store(level, buf, n);
	if (level < READ_ONCE(console_loglevel))
		console_write(buf, n);
	return n;
}

int printk(const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vprintk(fmt, ap);
	va_end(ap);
	return n;
}
