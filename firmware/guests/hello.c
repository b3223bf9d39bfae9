/*
 * hello: the smallest useful guest. Prints a greeting, checks the multiboot
 * magic, prints the memory sizes from the multiboot info block and the
 * command-line arguments (if any), then exits 0.
 */
#include "guest.h"

int main(uint32_t magic, const struct multiboot_info *info)
{
    printf("hello from an ahci-emu guest\n");

    if (magic != MB_BOOTLOADER_MAGIC) {
        printf("multiboot magic 0x%08x BAD (expected 0x%08x)\n", magic, MB_BOOTLOADER_MAGIC);
        return 1;
    }
    printf("multiboot magic 0x%08x ok\n", magic);

    if (!(info->flags & MB_INFO_MEMORY)) {
        printf("multiboot info has no memory sizes\n");
        return 1;
    }
    printf("mem_lower %u KiB\n", info->mem_lower);
    printf("mem_upper %u KiB\n", info->mem_upper);

    const char *args = mb_cmdline_args();
    if (*args)
        printf("args: %s\n", args);
    return 0;
}
