/* Everything a guest usually needs, in one include. */
#ifndef LIB_GUEST_H
#define LIB_GUEST_H

#include <stddef.h>
#include <stdint.h>

#include "div64.h"
#include "exit.h"
#include "io.h"
#include "multiboot.h"
#include "pci.h"
#include "printf.h"
#include "serial.h"
#include "string.h"
#include "test.h"

/* The guest's entry point, called by start.S; its return value is the exit
 * code. */
int main(uint32_t magic, const struct multiboot_info *info);

#endif
