/*
 * Interrupts for AHCI guests: an IDT whose 256 gates all lead to one C
 * dispatcher, the local APIC (enable, EOI), and the HBA's MSI capability.
 *
 *     ahci_irq_init();                          IDT, LAPIC on, LINT0/1 masked
 *     ahci_irq_set_handler(0x40, my_handler);
 *     ahci_msi_enable(0x40);                    MSI to APIC 0, vector 0x40
 *     ahci_write(AHCI_GHC, AHCI_GHC_AE | AHCI_GHC_IE);
 *     cli(); ...issue...; while (!done) ahci_irq_wait();   (sti; hlt; cli)
 *
 * Handlers run with interrupts off; they must EOI (ahci_lapic_eoi()).
 * Exceptions (vectors 0-31) without a handler print the vector and end the
 * run with exit code 99. Other vectors without a handler are counted in
 * ahci_irq_unexpected and EOIed.
 */
#ifndef LIB_AHCI_IRQ_H
#define LIB_AHCI_IRQ_H

#include <stdint.h>

#define LAPIC_BASE 0xFEE00000u
#define LAPIC_ID 0x020
#define LAPIC_TPR 0x080
#define LAPIC_EOI 0x0B0
#define LAPIC_SVR 0x0F0
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_LVT_LINT1 0x360
#define LAPIC_SVR_ENABLE (1u << 8)
#define LAPIC_LVT_MASKED (1u << 16)
#define LAPIC_SPURIOUS_VECTOR 0xFF

#define MSI_ADDRESS_BASE 0xFEE00000u

typedef void (*ahci_irq_handler)(uint8_t vector);

/* Number of interrupts taken per vector, and of unhandled ones. */
extern volatile uint32_t ahci_irq_count[256];
extern volatile uint32_t ahci_irq_unexpected;

/* Load the IDT (selector 0x08, 32-bit interrupt gates), enable the local
 * APIC through SVR with TPR 0, mask LINT0 and LINT1 (so that legacy PIC
 * interrupts left running by firmware cannot arrive). Interrupts stay off. */
void ahci_irq_init(void);
void ahci_irq_set_handler(uint8_t vector, ahci_irq_handler fn);
void ahci_lapic_eoi(void);
uint32_t ahci_lapic_read(uint32_t off);
void ahci_lapic_write(uint32_t off, uint32_t value);
/* `sti; hlt; cli`: sleep until an interrupt has been handled. */
void ahci_irq_wait(void);

/* Program the AHCI function's MSI capability: address 0xFEE00000 (APIC 0,
 * fixed delivery), data = vector (edge), one message, enable; also sets the
 * PCI command register's INTx disable bit. Returns 0, or -1 without an MSI
 * capability. ahci_find() must have run. */
int ahci_msi_enable(uint8_t vector);
void ahci_msi_disable(void);

/* INTx instead of MSI: the AHCI function's INTA is PIRQA on q35, I/O APIC input
 * (GSI) 16, level-triggered, active low. ahci_intx_enable disables MSI, clears the
 * PCI command register's INTx disable bit and unmasks the I/O APIC redirection
 * entry for GSI 16 with ``vector`` (fixed delivery to APIC 0). The handler must
 * clear PxIS and IS before its EOI, or the level interrupt comes straight back. */
#define IOAPIC_BASE 0xFEC00000u
#define IOAPIC_REGSEL 0x00
#define IOAPIC_WIN 0x10
#define IOAPIC_REDTBL(n) (0x10u + 2u * (n))
#define IOAPIC_LEVEL (1u << 15)
#define IOAPIC_ACTIVE_LOW (1u << 13)
#define IOAPIC_MASKED (1u << 16)
#define AHCI_INTX_GSI 16
uint32_t ahci_ioapic_read(uint32_t reg);
void ahci_ioapic_write(uint32_t reg, uint32_t value);
void ahci_intx_enable(uint8_t vector);
void ahci_intx_disable(void);

#endif
