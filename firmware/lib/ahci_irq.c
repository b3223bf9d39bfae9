#include "ahci_irq.h"

#include "ahci.h"
#include "exit.h"
#include "io.h"
#include "pci.h"
#include "printf.h"

struct idt_gate {
    uint16_t offset_lo;
    uint16_t selector;
    uint8_t zero;
    uint8_t type_attr;
    uint16_t offset_hi;
} __attribute__((packed));

struct idt_ptr {
    uint16_t limit;
    uint32_t base;
} __attribute__((packed));

#define IDT_SEL_CODE 0x08
#define IDT_INTERRUPT_GATE 0x8E /* present, DPL 0, 32-bit interrupt gate */

static struct idt_gate idt[256] __attribute__((aligned(8)));
static ahci_irq_handler handlers[256];
volatile uint32_t ahci_irq_count[256];
volatile uint32_t ahci_irq_unexpected;

/*
 * 256 entry stubs, 16 bytes apart: push a dummy error code where the CPU
 * pushes none, push the vector, go to the common path, which saves the
 * registers and calls ahci_irq_dispatch(vector).
 */
void ahci_irq_dispatch(uint32_t vector, uint32_t error, uint32_t eip);
extern const char ahci_irq_stubs[];

__asm__(".text\n"
        ".balign 16\n"
        ".globl ahci_irq_stubs\n"
        "ahci_irq_stubs:\n"
        ".set ahci_vec, 0\n"
        ".rept 256\n"
        ".balign 16\n"
        ".if (ahci_vec == 8) || ((ahci_vec >= 10) && (ahci_vec <= 14)) || (ahci_vec == 17) || "
        "(ahci_vec == 21) || (ahci_vec == 29) || (ahci_vec == 30)\n"
        ".else\n"
        "pushl $0\n"
        ".endif\n"
        "pushl $ahci_vec\n"
        "jmp ahci_irq_common\n"
        ".set ahci_vec, ahci_vec + 1\n"
        ".endr\n"
        "ahci_irq_common:\n"
        "pushal\n"
        "cld\n"
        "pushl 40(%esp)\n" /* EIP of the interrupted code */
        "pushl 40(%esp)\n" /* error code */
        "pushl 40(%esp)\n" /* vector */
        "call ahci_irq_dispatch\n"
        "addl $12, %esp\n"
        "popal\n"
        "addl $8, %esp\n"
        "iret\n");

void ahci_irq_dispatch(uint32_t vector, uint32_t error, uint32_t eip)
{
    vector &= 0xFF;
    ahci_irq_count[vector]++;
    if (handlers[vector]) {
        handlers[vector]((uint8_t)vector);
        return;
    }
    if (vector < 32) {
        printf("# unhandled exception %u (error 0x%x) at eip 0x%08x\n", vector, error, eip);
        guest_exit(99);
    }
    ahci_irq_unexpected++;
    if (vector != LAPIC_SPURIOUS_VECTOR)
        ahci_lapic_eoi();
}

uint32_t ahci_lapic_read(uint32_t off)
{
    return mmio_read32(LAPIC_BASE + off);
}

void ahci_lapic_write(uint32_t off, uint32_t value)
{
    mmio_write32(LAPIC_BASE + off, value);
}

void ahci_lapic_eoi(void)
{
    ahci_lapic_write(LAPIC_EOI, 0);
}

void ahci_irq_set_handler(uint8_t vector, ahci_irq_handler fn)
{
    handlers[vector] = fn;
}

void ahci_irq_init(void)
{
    cli();
    uint32_t base = (uint32_t)(uintptr_t)ahci_irq_stubs;
    for (unsigned v = 0; v < 256; v++) {
        uint32_t addr = base + 16 * v;
        idt[v].offset_lo = (uint16_t)addr;
        idt[v].selector = IDT_SEL_CODE;
        idt[v].zero = 0;
        idt[v].type_attr = IDT_INTERRUPT_GATE;
        idt[v].offset_hi = (uint16_t)(addr >> 16);
    }
    struct idt_ptr ptr = {sizeof(idt) - 1, (uint32_t)(uintptr_t)idt};
    __asm__ volatile("lidt %0" : : "m"(ptr) : "memory");

    ahci_lapic_write(LAPIC_LVT_LINT0, LAPIC_LVT_MASKED);
    ahci_lapic_write(LAPIC_LVT_LINT1, LAPIC_LVT_MASKED);
    ahci_lapic_write(LAPIC_TPR, 0);
    ahci_lapic_write(LAPIC_SVR, LAPIC_SVR_ENABLE | LAPIC_SPURIOUS_VECTOR);
}

void ahci_irq_wait(void)
{
    __asm__ volatile("sti\n\thlt\n\tcli" ::: "memory");
}

int ahci_msi_enable(uint8_t vector)
{
    pci_bdf_t bdf = ahci_hba.bdf;
    uint8_t cap = pci_find_cap(bdf, PCI_CAP_ID_MSI);
    if (!cap)
        return -1;
    uint16_t ctl = pci_read16(bdf, (uint8_t)(cap + 2));
    int is64 = (ctl & (1u << 7)) != 0;
    pci_write32(bdf, (uint8_t)(cap + 4), MSI_ADDRESS_BASE);
    if (is64) {
        pci_write32(bdf, (uint8_t)(cap + 8), 0);
        pci_write16(bdf, (uint8_t)(cap + 12), vector);
    } else {
        pci_write16(bdf, (uint8_t)(cap + 8), vector);
    }
    ctl = (uint16_t)((ctl & ~(7u << 4)) | 1u); /* one message, enable */
    pci_write16(bdf, (uint8_t)(cap + 2), ctl);
    uint16_t cmd = pci_read16(bdf, PCI_COMMAND);
    pci_write16(bdf, PCI_COMMAND, (uint16_t)(cmd | PCI_COMMAND_INTX_DISABLE));
    return 0;
}

void ahci_msi_disable(void)
{
    pci_bdf_t bdf = ahci_hba.bdf;
    uint8_t cap = pci_find_cap(bdf, PCI_CAP_ID_MSI);
    if (!cap)
        return;
    uint16_t ctl = pci_read16(bdf, (uint8_t)(cap + 2));
    pci_write16(bdf, (uint8_t)(cap + 2), (uint16_t)(ctl & ~1u));
}

uint32_t ahci_ioapic_read(uint32_t reg)
{
    mmio_write32(IOAPIC_BASE + IOAPIC_REGSEL, reg);
    return mmio_read32(IOAPIC_BASE + IOAPIC_WIN);
}

void ahci_ioapic_write(uint32_t reg, uint32_t value)
{
    mmio_write32(IOAPIC_BASE + IOAPIC_REGSEL, reg);
    mmio_write32(IOAPIC_BASE + IOAPIC_WIN, value);
}

void ahci_intx_enable(uint8_t vector)
{
    pci_bdf_t bdf = ahci_hba.bdf;
    ahci_msi_disable();
    uint16_t cmd = pci_read16(bdf, PCI_COMMAND);
    pci_write16(bdf, PCI_COMMAND, (uint16_t)(cmd & ~PCI_COMMAND_INTX_DISABLE));
    ahci_ioapic_write(IOAPIC_REDTBL(AHCI_INTX_GSI) + 1, 0); /* destination APIC 0 */
    ahci_ioapic_write(IOAPIC_REDTBL(AHCI_INTX_GSI),
                      vector | IOAPIC_LEVEL | IOAPIC_ACTIVE_LOW);
}

void ahci_intx_disable(void)
{
    uint32_t entry = ahci_ioapic_read(IOAPIC_REDTBL(AHCI_INTX_GSI));
    ahci_ioapic_write(IOAPIC_REDTBL(AHCI_INTX_GSI), entry | IOAPIC_MASKED);
    pci_bdf_t bdf = ahci_hba.bdf;
    uint16_t cmd = pci_read16(bdf, PCI_COMMAND);
    pci_write16(bdf, PCI_COMMAND, (uint16_t)(cmd | PCI_COMMAND_INTX_DISABLE));
}
