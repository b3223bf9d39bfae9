#include "ahci_test.h"

#include "printf.h"
#include "test.h"

struct ahci_port *ahci_test_start(uint32_t *ready)
{
    int rc = ahci_init();
    if (!check(rc == AHCI_OK, "AHCI HBA found and reset", "%s", ahci_strerror(rc)))
        test_done();
    uint32_t ports = ahci_start_ports();
    if (!check_ok(ports & 1, "disk on port 0 ready"))
        test_done();
    if (ready)
        *ready = ports;
    return ahci_port(0);
}

int ahci_test_identify(struct ahci_port *p, uint16_t *id, uint64_t *sectors)
{
    int rc = ahci_identify(p, id);
    *sectors = ata_id_sectors(id);
    printf("port %u capacity: %llu sectors\n", p->num, (unsigned long long)*sectors);
    return rc;
}
