/* Multiboot v1 information block and the kernel command line. */
#ifndef LIB_MULTIBOOT_H
#define LIB_MULTIBOOT_H

#include <stdint.h>

#define MB_BOOTLOADER_MAGIC 0x2BADB002

/* multiboot_info.flags: which fields are valid. */
#define MB_INFO_MEMORY (1u << 0)
#define MB_INFO_BOOTDEV (1u << 1)
#define MB_INFO_CMDLINE (1u << 2)
#define MB_INFO_MODS (1u << 3)
#define MB_INFO_MEM_MAP (1u << 6)
#define MB_INFO_LOADER_NAME (1u << 9)

struct multiboot_info {
    uint32_t flags;
    uint32_t mem_lower; /* KiB below 1 MiB */
    uint32_t mem_upper; /* KiB from 1 MiB to the first hole */
    uint32_t boot_device;
    uint32_t cmdline; /* physical address of a NUL-terminated string */
    uint32_t mods_count;
    uint32_t mods_addr;
    uint32_t syms[4];
    uint32_t mmap_length;
    uint32_t mmap_addr;
    uint32_t drives_length;
    uint32_t drives_addr;
    uint32_t config_table;
    uint32_t boot_loader_name;
    uint32_t apm_table;
};

/* One memory-map entry; `size` does not count itself. */
struct multiboot_mmap_entry {
    uint32_t size;
    uint64_t addr;
    uint64_t len;
    uint32_t type; /* 1: available RAM */
} __attribute__((packed));

/* Saved by start.S from EAX and EBX at entry. */
extern uint32_t mb_magic;
extern const struct multiboot_info *mb_info;

/* The whole command line ("" if the loader gave none). */
const char *mb_cmdline(void);

/*
 * The arguments after the first word of the command line. QEMU (and our
 * loader) pass "KERNEL_PATH ARGS"; this returns "ARGS" ("" if none).
 */
const char *mb_cmdline_args(void);

/*
 * key=value arguments from mb_cmdline_args(), split on spaces and tabs.
 * If a key is given more than once, the last one wins. A bare word `key`
 * counts as present with the value "".
 */
int arg_has(const char *name);
const char *arg_get(const char *name, const char *def);
/* Decimal, or hex with 0x; optional leading '-'. `def` if absent or bad. */
long arg_int(const char *name, long def);
uint64_t arg_u64(const char *name, uint64_t def);

#endif
