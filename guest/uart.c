// 16550 UART on COM1: the console.
#include "types.h"
#include "defs.h"
#include "x86.h"

#define UART_THR 0      // transmit holding register
#define UART_IER 1
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define LSR_THRE 0x20   // transmitter ready

void uart_init(void)
{
	outb(COM1_PORT + UART_IER, 0);          // no interrupts
	outb(COM1_PORT + UART_LCR, 0x80);       // DLAB: set baud divisor
	outb(COM1_PORT + 0, 1);                 // 115200
	outb(COM1_PORT + 1, 0);
	outb(COM1_PORT + UART_LCR, 0x03);       // 8N1
	outb(COM1_PORT + UART_FCR, 0x07);
	outb(COM1_PORT + UART_MCR, 0x03);
}

// Used by panic() too, so no ftrace site.
notrace void uart_putc(int c)
{
	while (!(inb(COM1_PORT + UART_LSR) & LSR_THRE))
		cpu_relax();
	outb(COM1_PORT + UART_THR, c);
}
