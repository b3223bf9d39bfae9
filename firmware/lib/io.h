/* Port I/O, memory-mapped I/O and a few CPU helpers. Header only. */
#ifndef LIB_IO_H
#define LIB_IO_H

#include <stdint.h>

/* Compiler barrier: no memory access is moved across it. */
static inline void barrier(void)
{
    __asm__ volatile("" ::: "memory");
}

static inline void outb(uint16_t port, uint8_t value)
{
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port) : "memory");
}

static inline void outw(uint16_t port, uint16_t value)
{
    __asm__ volatile("outw %0, %1" : : "a"(value), "Nd"(port) : "memory");
}

static inline void outl(uint16_t port, uint32_t value)
{
    __asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port) : "memory");
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t value;
    __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port) : "memory");
    return value;
}

static inline uint16_t inw(uint16_t port)
{
    uint16_t value;
    __asm__ volatile("inw %1, %0" : "=a"(value) : "Nd"(port) : "memory");
    return value;
}

static inline uint32_t inl(uint16_t port)
{
    uint32_t value;
    __asm__ volatile("inl %1, %0" : "=a"(value) : "Nd"(port) : "memory");
    return value;
}

/*
 * MMIO accessors. Writes are ordered after every earlier memory access of
 * the program (e.g. a command table built before ringing a doorbell); reads
 * are ordered before every later one (e.g. DMA data read after polling).
 */
static inline uint8_t mmio_read8(uintptr_t addr)
{
    uint8_t value = *(volatile uint8_t *)addr;
    barrier();
    return value;
}

static inline uint16_t mmio_read16(uintptr_t addr)
{
    uint16_t value = *(volatile uint16_t *)addr;
    barrier();
    return value;
}

static inline uint32_t mmio_read32(uintptr_t addr)
{
    uint32_t value = *(volatile uint32_t *)addr;
    barrier();
    return value;
}

static inline void mmio_write8(uintptr_t addr, uint8_t value)
{
    barrier();
    *(volatile uint8_t *)addr = value;
}

static inline void mmio_write16(uintptr_t addr, uint16_t value)
{
    barrier();
    *(volatile uint16_t *)addr = value;
}

static inline void mmio_write32(uintptr_t addr, uint32_t value)
{
    barrier();
    *(volatile uint32_t *)addr = value;
}

/* Spin-loop hint (the PAUSE instruction). */
static inline void cpu_relax(void)
{
    __asm__ volatile("pause" ::: "memory");
}

static inline void pause(void)
{
    cpu_relax();
}

static inline void hlt(void)
{
    __asm__ volatile("hlt" ::: "memory");
}

static inline void cli(void)
{
    __asm__ volatile("cli" ::: "memory");
}

static inline void sti(void)
{
    __asm__ volatile("sti" ::: "memory");
}

#endif
