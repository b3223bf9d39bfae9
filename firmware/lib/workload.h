/*
 * The benchmark guests' workload: parsed from the command line, the same
 * keys for every bench guest (bench, bench_osdev, bench_bsd, bench_msi):
 *   op=read       one READ DMA EXT at a time (queue depth 1)  [default]
 *   op=write      WRITE DMA EXT, each followed by FLUSH CACHE EXT
 *                 (flush=N: one flush after every N writes, flush=0: none)
 *   op=ncq        READ FPDMA QUEUED, `qd` commands in flight per batch
 *   op=ncqwrite   WRITE FPDMA QUEUED, the same way
 *   bs=BYTES      bytes per command, a multiple of 512, at most the guest's
 *                 maximum (default 4096)
 *   qd=N          NCQ queue depth, 1..32 (default 32; op=read/write: 1)
 *   count=N       commands to run (default 1000; 0 just boots and sets up)
 *   lba=N         first sector of the region (default 0)
 *   sectors=N     sectors in the region (default: up to the end of the disk)
 *   pattern=rand  block-aligned random offsets in the region (xorshift32) [default]
 *   pattern=seq   consecutive blocks from the start of the region, wrapping
 *   seed=N        PRNG seed (default 1; 0 is taken as 1)
 *   port=N        AHCI port of the disk (default 0)
 *
 * Every guest ends with one summary line (workload_report):
 *   bench guest=NAME op=read bs=4096 qd=1 pattern=rand count=1000 done=1000 errors=0 tsc=N
 * where tsc is the time-stamp counter's advance over the command loop alone
 * (rdtsc before the first command and after the last): the benchmark runner
 * times the commands from it, free of boot and exit. Exit 0 when every
 * command succeeded, 1 if any failed, 2 for bad arguments or no usable disk.
 */
#ifndef LIB_WORKLOAD_H
#define LIB_WORKLOAD_H

#include <stdint.h>

#include "ahci.h"

enum workload_op { WL_READ, WL_WRITE, WL_NCQ_READ, WL_NCQ_WRITE };

struct workload {
    enum workload_op op;
    int queued;         /* an NCQ op */
    uint32_t bs;        /* bytes per command */
    uint32_t spb;       /* sectors per command */
    unsigned qd;        /* commands per batch */
    unsigned long count;
    unsigned long flush_every; /* op=write: FLUSH CACHE EXT after this many writes; 0 none */
    unsigned port;
    uint64_t first;     /* first sector of the region */
    uint64_t sectors;   /* from lba=/sectors=, set by workload_region */
    uint32_t blocks;    /* bs-sized blocks in the region */
    int random;
    uint32_t rng;
    uint32_t next_block;
};

/* Parse the command line; bs above max_bs is refused. Prints and returns -1
 * on bad arguments, else 0. */
int workload_parse(struct workload *w, uint32_t max_bs);
/* workload_parse for a driver that never sends FLUSH: flush= is refused too. */
int workload_parse_unflushed(struct workload *w, uint32_t max_bs);
/* Fit the region to a disk of `capacity` sectors; prints and returns -1 if
 * it does not fit, else 0. */
int workload_region(struct workload *w, uint64_t capacity);
/* The bench guests' opening: find and reset the HBA, start the ports,
 * IDENTIFY the disk on w->port and fit the region to it. Prints why and
 * returns NULL on failure. */
struct ahci_port *workload_open(struct workload *w);
/* Hand the (running) port a driver's own command list and received-FIS
 * area: stop it, point PxCLB/PxFB at them, set FRE and ST again. */
int workload_rebase(struct ahci_port *p, void *clb, void *fis);
/* The next command's LBA (random or sequential, block aligned). */
uint64_t workload_next_lba(struct workload *w);
/* The ATA command of the op (READ/WRITE DMA EXT or FPDMA QUEUED). */
uint8_t workload_command(const struct workload *w);
/* Print the summary line (see above); the exit code it calls for. */
int workload_report(const struct workload *w, const char *guest, unsigned long done,
                    unsigned errors, uint64_t tsc);

/* The CPU's time-stamp counter. */
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

#endif
