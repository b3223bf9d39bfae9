/*
 * The opening that single-disk AHCI test guests share, as checks: find and
 * reset the HBA ("AHCI HBA found and reset"), start the ports, and require a
 * disk on port 0 ("disk on port 0 ready"). A failed step ends the run
 * (test_done). Returns port 0; *ready (if not NULL) gets ahci_start_ports()'s
 * mask of the ports that came up.
 *
 * ahci_test_identify then IDENTIFYs a port and prints "port N capacity: S
 * sectors"; the guest checks the result against what it needs.
 */
#ifndef LIB_AHCI_TEST_H
#define LIB_AHCI_TEST_H

#include <stdint.h>

#include "ahci.h"

struct ahci_port *ahci_test_start(uint32_t *ready);
/* IDENTIFY into id[256], print the capacity; returns the ahci_identify code and
 * stores the capacity IDENTIFY reports in *sectors. */
int ahci_test_identify(struct ahci_port *p, uint16_t *id, uint64_t *sectors);

#endif
