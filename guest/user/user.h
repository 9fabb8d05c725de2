// User-space API: system call stubs (usys.S) and a tiny C library (ulib.c).
#ifndef USER_H
#define USER_H

typedef unsigned long size_t;

// usys.S
long write(int fd, const void *buf, size_t len);
long sched_yield(void);
long nanosleep(long ms);
long getpid(void);
void exit(int code) __attribute__((noreturn));
long cmdline(char *buf, size_t len);
long cpu_down(int cpu);
long cpu_up(int cpu);
long sem_up(int id);
long sem_down(int id);
long spawn(const char *name);

// ulib.c
size_t strlen(const char *s);
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void *memset(void *dst, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);

// Semaphores shared by ping and pong
#define SEM_PING 0
#define SEM_PONG 1

#endif
