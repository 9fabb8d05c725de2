// x86-64 paging, segment and gate definitions, and kernel address conversions.
#ifndef MMU_H
#define MMU_H
#include "types.h"
#include "memlayout.h"

#define PGSIZE      4096
#define HPGSIZE     0x200000            // 2 MiB large page
#define PGROUNDUP(a)   ALIGN_UP((u64)(a), PGSIZE)
#define PGROUNDDOWN(a) ALIGN_DOWN((u64)(a), PGSIZE)

// Page table entry bits
#define PTE_P       0x001   // present
#define PTE_W       0x002   // writable
#define PTE_U       0x004   // user
#define PTE_PWT     0x008   // write-through
#define PTE_PCD     0x010   // cache disable
#define PTE_PS      0x080   // 2 MiB page (in a PD entry)
#define PTE_NX      (1ul << 63) // no execute (EFER.NXE is on)
#define PTE_ADDR(e) ((e) & 0x000ffffffffff000ul)

// Index of va in the page table at each level (4 = PML4 ... 1 = PT)
#define PX(level, va) (((u64)(va) >> (12 + 9 * ((level) - 1))) & 511)
#define NPTENTRIES  512
#define KERNEL_PML4_FIRST 256   // entries 256..511 (the kernel half) are shared by every pml4

typedef u64 pte_t;

// Direct map and kernel image conversions
#define P2V(pa)  ((void *)((u64)(pa) + DIRECT_MAP_VA))
#define V2P(va)  (__v2p((u64)(va)))
static inline u64 __v2p(u64 va)
{
	if (va >= KERNEL_VA_OFFSET)
		return va - KERNEL_VA_OFFSET;
	return va - DIRECT_MAP_VA;
}

// GDT: Linux's x86-64 layout; the index of each selector in a struct cpu's gdt[]
#define GDT_ENTRY_KERNEL32_CS   1
#define GDT_ENTRY_KERNEL_CS     2
#define GDT_ENTRY_KERNEL_DS     3
#define GDT_ENTRY_USER32_CS     4
#define GDT_ENTRY_USER_DS       5
#define GDT_ENTRY_USER_CS       6
#define GDT_ENTRY_TSS           8       // 16 bytes: entries 8 and 9
#define GDT_ENTRIES             16

// Segment descriptors (flat; L=1 for 64-bit code)
#define SEG_KERNEL32_CS 0x00cf9b000000fffful
#define SEG_KERNEL_CS   0x00af9b000000fffful
#define SEG_KERNEL_DS   0x00cf93000000fffful
#define SEG_USER32_CS   0x00cffb000000fffful
#define SEG_USER_DS     0x00cff3000000fffful
#define SEG_USER_CS     0x00affb000000fffful
#define STS_T64A        0x9     // available 64-bit TSS

// 64-bit task state segment
struct tss {
	u32 reserved0;
	u64 rsp[3];             // rsp[0]: stack on a ring 3 -> 0 change
	u64 reserved1;
	u64 ist[7];             // ist[n - 1]: interrupt stack table slot n
	u64 reserved2;
	u16 reserved3;
	u16 iomap_base;
} __packed;

// 64-bit interrupt gate
struct gatedesc {
	u16 off_lo;
	u16 sel;
	u8 ist;
	u8 type_attr;           // P | DPL | type
	u16 off_mid;
	u32 off_hi;
	u32 reserved;
} __packed;

#define GATE_INTR   0x8e    // present, DPL0, 64-bit interrupt gate
#define GATE_DPL3   0x60

#endif
