/*
 * bench: a polling disk benchmark for ahci-emu and QEMU q35 alike, with the
 * least guest work per command of the bench guests.
 *
 * The workload comes from the command line (-append / --append); the keys,
 * the summary line and the exit codes are those of every bench guest
 * (lib/workload.h). bs is at most 1 MiB.
 *
 * No interrupts: every command is polled. Commands are built once per slot
 * through the library (ahci_cmd_build) and then only the LBA and PRDBC are
 * changed before each issue, so the guest's own work per command is small
 * and the same on every machine. Per command the guest does one PxCI write
 * and, when the command is already done, one PxCI and one PxIS read.
 * Failed commands are reported one line each, at most 10.
 */
#include "ahci.h"
#include "guest.h"
#include "workload.h"

#define MAX_BS (1u << 20)
#define MAX_ERRORS 10
#define FLUSH_SLOT 31 /* op=write: the FLUSH CACHE EXT lives here (writes use slot 0) */

static struct ahci_port *port;

/* LBA fields of a Register H2D FIS (48-bit layout). */
static inline void set_lba(volatile uint8_t *cfis, uint64_t lba)
{
    cfis[4] = (uint8_t)lba;
    cfis[5] = (uint8_t)(lba >> 8);
    cfis[6] = (uint8_t)(lba >> 16);
    cfis[8] = (uint8_t)(lba >> 24);
    cfis[9] = (uint8_t)(lba >> 32);
    cfis[10] = (uint8_t)(lba >> 40);
}

/* Wait until the slots in `ci` are clear in PxCI (and `sact` in PxSACT),
 * checking PxIS for errors; AHCI_OK or an AHCI_E* code. */
static int wait_done(uint32_t ci, uint32_t sact)
{
    unsigned long loops = ahci_hba.loops;
    for (;;) {
        if (!(ahci_port_read(port, PX_CI) & ci) &&
            (!sact || !(ahci_port_read(port, PX_SACT) & sact)))
            break;
        uint32_t is = ahci_port_read(port, PX_IS);
        if (is & PXIS_ERRORS)
            return (is & PXIS_TFES) ? AHCI_ETASKFILE : AHCI_EHOSTBUS;
        if (!loops--)
            return AHCI_ETIMEOUT;
        cpu_relax();
    }
    uint32_t is = ahci_port_read(port, PX_IS);
    if (is & PXIS_ERRORS)
        return (is & PXIS_TFES) ? AHCI_ETASKFILE : AHCI_EIFACE;
    return AHCI_OK;
}

static unsigned errors;

/* Count a failure, say what it was (the first few), and bring the port back. */
static int failed(int rc, unsigned long i, uint64_t lba)
{
    errors++;
    if (errors <= MAX_ERRORS)
        printf("bench error: command %lu lba %llu: %s (PxIS 0x%08x PxTFD 0x%08x)\n", i,
               (unsigned long long)lba, ahci_strerror(rc), ahci_port_read(port, PX_IS),
               ahci_port_read(port, PX_TFD));
    if (ahci_port_recover(port) != AHCI_OK || errors >= MAX_ERRORS)
        return -1; /* give up */
    ahci_port_write(port, PX_IS, 0xFFFFFFFFu);
    return 0;
}

int main(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    struct workload w;
    if (workload_parse(&w, MAX_BS) != 0)
        return 2;
    port = workload_open(&w);
    if (!port)
        return 2;
    int rc;

    /* Build every slot once; afterwards only the LBA and PRDBC change. */
    uint8_t command = workload_command(&w);
    int writes = w.op == WL_WRITE || w.op == WL_NCQ_WRITE;
    for (unsigned s = 0; s < w.qd; s++) {
        uint8_t *buf = ahci_data_area + s * w.bs;
        if (writes)
            ahci_pattern_fill(buf, s, w.spb, 0xBE);
        struct ahci_sg sg = {(uintptr_t)buf, w.bs};
        struct ata_tf tf = ahci_tf(command, w.first, w.spb);
        rc = w.queued ? ahci_ncq_build(port, s, command, w.first, w.spb, &sg, 1)
                      : ahci_cmd_build(port, s, &tf, 0, &sg, 1, 0);
        if (rc != AHCI_OK) {
            printf("bench: cannot build slot %u: %s\n", s, ahci_strerror(rc));
            return 2;
        }
    }
    if (w.flush_every) {
        struct ata_tf tf = ahci_tf(ATA_CMD_FLUSH_CACHE_EXT, 0, 0);
        tf.device = 0;
        ahci_cmd_build(port, FLUSH_SLOT, &tf, 0, 0, 0, 0);
    }
    ahci_port_write(port, PX_IS, 0xFFFFFFFFu);

    unsigned long done = 0, total = w.count;
    uint64_t lbas[32];
    int stop = 0;
    uint64_t start = rdtsc();
    while (done < total && !stop) {
        unsigned n = total - done < w.qd ? (unsigned)(total - done) : w.qd;
        for (unsigned s = 0; s < n; s++) {
            lbas[s] = workload_next_lba(&w);
            set_lba(port->tables[s].cfis, lbas[s]);
            port->clb[s].prdbc = 0;
        }
        uint32_t mask = n == 32 ? 0xFFFFFFFFu : (1u << n) - 1;
        barrier();
        if (w.queued) {
            ahci_ncq_issue(port, mask);
            rc = wait_done(mask, mask);
        } else {
            ahci_issue(port, mask);
            rc = wait_done(mask, 0);
        }
        if (rc != AHCI_OK) {
            stop = failed(rc, done, lbas[0]) != 0;
            done += n;
            continue;
        }
        done += n;
        if (w.flush_every && (done % w.flush_every == 0 || done == total)) {
            port->clb[FLUSH_SLOT].prdbc = 0;
            barrier();
            ahci_issue(port, 1u << FLUSH_SLOT);
            rc = wait_done(1u << FLUSH_SLOT, 0);
            if (rc != AHCI_OK)
                stop = failed(rc, done - 1, 0) != 0;
        }
    }
    uint64_t tsc = rdtsc() - start;
    return workload_report(&w, "bench", done, errors, tsc);
}
