// A tiny C library for user programs: strings and a printf that writes one line at once.
#include "user.h"

typedef __builtin_va_list va_list;

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

void *memset(void *dst, int c, size_t n)
{
	char *d = dst;

	while (n--)
		*d++ = c;
	return dst;
}

void *memcpy(void *dst, const void *src, size_t n)
{
	char *d = dst;
	const char *s = src;

	while (n--)
		*d++ = *s++;
	return dst;
}

static void putnum(char *buf, int *n, long v, int base)
{
	char tmp[24];
	int i = 0;
	unsigned long u = v < 0 && base == 10 ? -(unsigned long)v : (unsigned long)v;

	if (v < 0 && base == 10)
		buf[(*n)++] = '-';
	do {
		tmp[i++] = "0123456789abcdef"[u % base];
		u /= base;
	} while (u);
	while (i)
		buf[(*n)++] = tmp[--i];
}

// %d %ld %x %lx %s %c only; output is formatted first, then written with one write().
int printf(const char *fmt, ...)
{
	char buf[200];
	int n = 0;
	va_list ap;

	__builtin_va_start(ap, fmt);
	for (; *fmt && n < (int)sizeof(buf) - 24; fmt++) {
		int lng = 0;
		if (*fmt != '%') {
			buf[n++] = *fmt;
			continue;
		}
		if (*++fmt == 'l') {
			lng = 1;
			fmt++;
		}
		if (*fmt == 'd')
			putnum(buf, &n, lng ? __builtin_va_arg(ap, long) : __builtin_va_arg(ap, int), 10);
		else if (*fmt == 'x')
			putnum(buf, &n, lng ? __builtin_va_arg(ap, unsigned long) : __builtin_va_arg(ap, unsigned int), 16);
		else if (*fmt == 'c')
			buf[n++] = __builtin_va_arg(ap, int);
		else if (*fmt == 's')
			for (const char *s = __builtin_va_arg(ap, const char *); *s && n < (int)sizeof(buf) - 1; s++)
				buf[n++] = *s;
		else
			buf[n++] = *fmt;
	}
	__builtin_va_end(ap);
	return write(1, buf, n);
}
