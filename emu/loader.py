"""The boot loader: what firmware and a bootloader would leave behind for the kernel.

Copies the ELF segments to their physical addresses, writes boot_params, a temporary GDT and
page tables (identity 1 GiB + the same 1 GiB at KERNEL_VA_OFFSET), and puts a vCPU in 64-bit
mode at CPL0 with paging on, ready to enter the kernel (docs/machine.md, "Boot").
"""
from __future__ import annotations

import struct

from unicorn.x86_const import (UC_X86_REG_CR0, UC_X86_REG_CR3, UC_X86_REG_CR4, UC_X86_REG_GDTR,
                               UC_X86_REG_MSR)

from . import memlayout as L
from . import ucx
from .elf import KernelImage

MSR_EFER = 0xC0000080
EFER_SCE, EFER_LME, EFER_LMA, EFER_NXE = 1, 1 << 8, 1 << 10, 1 << 11
CR0_PE, CR0_MP, CR0_WP, CR0_PG = 1, 2, 1 << 16, 1 << 31
CR4_PAE, CR4_PGE = 1 << 5, 1 << 7
PTE_P, PTE_W, PTE_PS = 1, 2, 0x80


def gdt_entry(access: int, flags: int) -> bytes:
    """A flat descriptor (base 0, limit 4 GiB) with the given access byte and flags nibble."""
    return struct.pack("<HHBBBB", 0xFFFF, 0, 0, access, 0xF | (flags << 4), 0)


BOOT_GDT = (b"\0" * 8 + b"\0" * 8 + gdt_entry(0x9A, 0xA) + gdt_entry(0x92, 0xC))


def load_image(ram: memoryview, image: KernelImage) -> None:
    """Copy every PT_LOAD segment to its physical address and zero its bss."""
    for seg in image.segments:
        end = seg.paddr + seg.memsz
        if end > len(ram):
            raise ValueError(f"kernel segment at 0x{seg.paddr:x} does not fit in {len(ram) >> 20} MiB")
        ram[seg.paddr:seg.paddr + len(seg.data)] = seg.data
        ram[seg.paddr + len(seg.data):end] = bytes(seg.memsz - len(seg.data))


def write_boot_params(ram: memoryview, ncpus: int, cmdline: str) -> None:
    """boot_params at BOOT_PARAMS_PA (offsets BP_*); the command line fits (checks.py)."""
    text = cmdline.encode()
    base = L.BOOT_PARAMS_PA
    ram[base:base + 0x1000] = bytes(0x1000)
    struct.pack_into("<IIQ", ram, base, L.BOOT_MAGIC, ncpus, len(ram))
    ram[base + L.BP_CMDLINE:base + L.BP_CMDLINE + len(text)] = text


def write_boot_tables(ram: memoryview) -> None:
    """The loader's GDT and page tables (PML4, two PDPTs, one PD of 2 MiB pages)."""
    ram[L.BOOT_GDT_PA:L.BOOT_GDT_PA + len(BOOT_GDT)] = BOOT_GDT
    pml4, pdpt_lo, pdpt_hi, pd = (L.BOOT_PML4_PA + i * 0x1000 for i in range(4))
    ram[pml4:pml4 + 0x4000] = bytes(0x4000)
    struct.pack_into("<Q", ram, pml4, pdpt_lo | PTE_P | PTE_W)
    struct.pack_into("<Q", ram, pml4 + 511 * 8, pdpt_hi | PTE_P | PTE_W)
    struct.pack_into("<Q", ram, pdpt_lo, pd | PTE_P | PTE_W)
    struct.pack_into("<Q", ram, pdpt_hi + 510 * 8, pd | PTE_P | PTE_W)
    for i in range(512):
        struct.pack_into("<Q", ram, pd + i * 8, (i << 21) | PTE_P | PTE_W | PTE_PS)


def reset_cpu(cpu) -> None:
    """Put a vCPU in the loader's state: long mode, paging on, CPL0 on the boot GDT, IF=0."""
    uc = cpu.uc
    uc.reg_write(UC_X86_REG_GDTR, (0, L.BOOT_GDT_PA, len(BOOT_GDT) - 1, 0))
    uc.reg_write(UC_X86_REG_CR3, L.BOOT_PML4_PA)
    uc.reg_write(UC_X86_REG_CR4, uc.reg_read(UC_X86_REG_CR4) | CR4_PAE | CR4_PGE)
    efer = uc.reg_read(UC_X86_REG_MSR, MSR_EFER)
    uc.reg_write(UC_X86_REG_MSR, (MSR_EFER, efer | EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE))
    uc.reg_write(UC_X86_REG_CR0, CR0_PE | CR0_MP | CR0_WP | CR0_PG)
    uc.context_update(cpu.ctx)
    buf = cpu.ctx_buf
    cpu.load_cs_ss(buf, L.KERNEL_CS, L.KERNEL_DS, 0)
    data = struct.unpack_from("<IIQII", buf, ucx.seg_offset(ucx.R_SS))
    for seg in (ucx.R_DS, ucx.R_ES):
        struct.pack_into("<IIQII", buf, ucx.seg_offset(seg), *data)
    struct.pack_into("<Q", buf, ucx.CTX_EFLAGS, 0x2)
    uc.context_restore(cpu.ctx)
