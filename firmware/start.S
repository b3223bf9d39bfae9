/*
 * Guest entry point: Multiboot v1 header and the 32-bit start-up code.
 *
 * The loader (QEMU -kernel, or ahci-emu's own) enters here in 32-bit
 * protected mode with paging off, EAX = 0x2BADB002 and EBX pointing at the
 * multiboot information block. The loader has already zeroed .bss.
 *
 * We load our own flat GDT (code 0x08, data 0x10) so that later code knows
 * its selectors, switch to a 64 KiB stack in .bss and call
 * main(magic, info). If main returns, its value becomes the exit code.
 */

#define MB_HEADER_MAGIC 0x1BADB002
#define MB_FLAG_PAGE_ALIGN (1 << 0)
#define MB_FLAG_MEMORY_INFO (1 << 1)
#define MB_HEADER_FLAGS (MB_FLAG_PAGE_ALIGN | MB_FLAG_MEMORY_INFO)

#define SEL_CODE 0x08
#define SEL_DATA 0x10
#define STACK_SIZE 0x10000

    .section .multiboot, "a"
    .balign 4
    .long MB_HEADER_MAGIC
    .long MB_HEADER_FLAGS
    .long -(MB_HEADER_MAGIC + MB_HEADER_FLAGS)

    .section .text.entry, "ax"
    .code32
    .globl _start
    .type _start, @function
_start:
    cli
    cld
    /* Save the loader's arguments before anything clobbers EAX/EBX. */
    movl %eax, mb_magic
    movl %ebx, mb_info

    lgdt gdt_descriptor
    ljmp $SEL_CODE, $1f
1:
    movw $SEL_DATA, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    movl $stack_top, %esp
    xorl %ebp, %ebp

    /* Keep the stack 16-byte aligned at the call, as the i386 ABI expects. */
    subl $8, %esp
    pushl mb_info
    pushl mb_magic
    call main
    addl $16, %esp

    subl $12, %esp
    pushl %eax
    call guest_exit
2:
    cli
    hlt
    jmp 2b
    .size _start, . - _start

    .section .data
    .balign 8
gdt:
    .quad 0                       /* 0x00: null descriptor */
    .quad 0x00CF9B000000FFFF      /* 0x08: code, base 0, 4 GiB, 32-bit, accessed */
    .quad 0x00CF93000000FFFF      /* 0x10: data, base 0, 4 GiB, 32-bit, accessed */
gdt_end:

    .balign 4
    .word 0                       /* pad so that the base below is aligned */
gdt_descriptor:
    .word gdt_end - gdt - 1
    .long gdt

    .balign 4
    .globl mb_magic
    .type mb_magic, @object
mb_magic:
    .long 0
    .size mb_magic, 4
    .globl mb_info
    .type mb_info, @object
mb_info:
    .long 0
    .size mb_info, 4

    .section .bss
    .balign 16
stack_bottom:
    .skip STACK_SIZE
stack_top:

    .section .note.GNU-stack, "", @progbits
