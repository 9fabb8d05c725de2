// seq_file: formatted output into a caller's buffer (as /proc files use it).
#include "types.h"
#include "defs.h"

// Append; on overflow the file is marked full (count = size), as Linux does.
int seq_printf(struct seq_file *m, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (m->count >= m->size)
		return -1;
	va_start(ap, fmt);
	n = vsnprintf(m->buf + m->count, m->size - m->count, fmt, ap);
	va_end(ap);
	if (m->count + n >= m->size) {
		m->count = m->size;
		return -1;
	}
	m->count += n;
	return 0;
}

int seq_puts(struct seq_file *m, const char *s)
{
	size_t n = strlen(s);

	if (m->count + n >= m->size) {
		m->count = m->size;
		return -1;
	}
	memcpy(m->buf + m->count, s, n);
	m->count += n;
	return 0;
}
