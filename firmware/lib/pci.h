/* PCI configuration mechanism #1 (ports 0xCF8/0xCFC), enumeration, BARs. */
#ifndef LIB_PCI_H
#define LIB_PCI_H

#include <stdint.h>

/* A function's address: bus << 8 | device << 3 | function. */
typedef uint32_t pci_bdf_t;

#define PCI_BDF(bus, dev, fn) ((pci_bdf_t)(((bus) << 8) | ((dev) << 3) | (fn)))
#define PCI_BUS(bdf) (((bdf) >> 8) & 0xFF)
#define PCI_DEV(bdf) (((bdf) >> 3) & 0x1F)
#define PCI_FN(bdf) ((bdf) & 0x7)
/* printf("%02x:%02x.%x", PCI_BDF_ARGS(bdf)) */
#define PCI_BDF_ARGS(bdf) PCI_BUS(bdf), PCI_DEV(bdf), PCI_FN(bdf)

#define PCI_CONFIG_ADDRESS 0xCF8
#define PCI_CONFIG_DATA 0xCFC

/* Type 0 header offsets. */
#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_REVISION_ID 0x08
#define PCI_PROG_IF 0x09
#define PCI_SUBCLASS 0x0A
#define PCI_CLASS 0x0B
#define PCI_CACHE_LINE_SIZE 0x0C
#define PCI_LATENCY_TIMER 0x0D
#define PCI_HEADER_TYPE 0x0E
#define PCI_BAR0 0x10
#define PCI_SUBSYSTEM_VENDOR_ID 0x2C
#define PCI_SUBSYSTEM_ID 0x2E
#define PCI_CAP_PTR 0x34
#define PCI_INTERRUPT_LINE 0x3C
#define PCI_INTERRUPT_PIN 0x3D
/* Type 1 (bridge) header. */
#define PCI_SECONDARY_BUS 0x19

#define PCI_COMMAND_IO (1u << 0)
#define PCI_COMMAND_MEMORY (1u << 1)
#define PCI_COMMAND_MASTER (1u << 2)
#define PCI_COMMAND_INTX_DISABLE (1u << 10)

#define PCI_STATUS_CAP_LIST (1u << 4)

#define PCI_HEADER_TYPE_MASK 0x7F
#define PCI_HEADER_MULTIFUNCTION 0x80

#define PCI_BAR_IO (1u << 0)
#define PCI_BAR_MEM_TYPE_MASK (3u << 1)
#define PCI_BAR_MEM_TYPE_64 (2u << 1)
#define PCI_BAR_MEM_PREFETCH (1u << 3)

#define PCI_CAP_ID_PM 0x01
#define PCI_CAP_ID_MSI 0x05
#define PCI_CAP_ID_PCIE 0x10
#define PCI_CAP_ID_MSIX 0x11
#define PCI_CAP_ID_SATA 0x12

uint8_t pci_read8(pci_bdf_t bdf, uint8_t off);
uint16_t pci_read16(pci_bdf_t bdf, uint8_t off); /* off 2-byte aligned */
uint32_t pci_read32(pci_bdf_t bdf, uint8_t off); /* off 4-byte aligned */
void pci_write8(pci_bdf_t bdf, uint8_t off, uint8_t value);
void pci_write16(pci_bdf_t bdf, uint8_t off, uint16_t value);
void pci_write32(pci_bdf_t bdf, uint8_t off, uint32_t value);

/* 1 if a function answers at bdf (vendor ID not 0xFFFF). */
int pci_present(pci_bdf_t bdf);

/* Call visit(bdf, ctx) for each function on `bus`, in device/function
 * order: function 0 of all 32 devices, functions 1-7 where function 0's
 * header type has the multifunction bit. */
typedef void (*pci_visit_fn)(pci_bdf_t bdf, void *ctx);
void pci_scan_bus(uint8_t bus, pci_visit_fn visit, void *ctx);
/* Same from bus 0, descending into the secondary bus of PCI-PCI bridges. */
void pci_enumerate(pci_visit_fn visit, void *ctx);

/* First function (enumeration order) with this class code; 0 if found
 * (and *bdf set), -1 if none. */
int pci_find_class(uint8_t class_code, uint8_t subclass, uint8_t progif, pci_bdf_t *bdf);

/* Offset of the first capability with this id, 0 if none. */
uint8_t pci_find_cap(pci_bdf_t bdf, uint8_t cap_id);

/* BAR n (0-5) as read from config space. */
uint32_t pci_bar_read(pci_bdf_t bdf, int n);
int pci_bar_is_io(pci_bdf_t bdf, int n);
int pci_bar_is_64(pci_bdf_t bdf, int n);
/* Base address with the flag bits masked off (both halves of a 64-bit BAR). */
uint64_t pci_bar_addr(pci_bdf_t bdf, int n);
/* Write all ones to BAR n with I/O and memory decoding off, read the mask
 * back, restore the BAR and the command register; returns the mask. */
uint32_t pci_bar_probe(pci_bdf_t bdf, int n);
/* Size in bytes of BAR n (from the probe; 64-bit BARs use both halves),
 * 0 if the BAR is not implemented. */
uint64_t pci_bar_size(pci_bdf_t bdf, int n);

#endif
