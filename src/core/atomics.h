/*
 * core/atomics.h -- the few atomic operations the channel core (core/ring.c)
 * and the sync files (platform/sync_*.c) need, on words that live in shared
 * memory.
 *
 * Owns: the at_* loads, stores, adds and compare-and-swap.
 * May include: <stdint.h>, and the compiler's own <intrin.h> under MSVC;
 * no OS header, no Python.h.
 *
 * GCC and Clang (Linux, macOS, mingw-w64) use the __atomic builtins, which
 * are lock-free for naturally aligned 32- and 64-bit words and therefore
 * work across processes.  MSVC (Python's own compiler on Windows) uses the
 * Interlocked family; on x86-64 and ARM64 those are full barriers, and
 * plain volatile loads/stores of aligned words are single accesses
 * (volatile:iso semantics are assumed, so the barriers are explicit).
 *
 * Ordering names follow C11: acquire loads pair with release stores;
 * the _sc operations are sequentially consistent (used for the
 * waiter-count handshake, where a store must not pass a later load).
 * at_cas32_val and at_xchg32 are sequentially consistent too (every
 * read-modify-write on x86 and every Interlocked call is a full barrier
 * anyway); at_cas32_val writes the value it found to *EXPECTED on failure,
 * for compare-and-swap loops.
 */
#ifndef PYSHM_CORE_ATOMICS_H
#define PYSHM_CORE_ATOMICS_H

#include <stdint.h>     /* uint32_t, uint64_t */

#if defined(__GNUC__) || defined(__clang__)

static inline uint32_t at_load32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint32_t at_load32_sc(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline uint64_t at_load64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint64_t at_load64_relaxed(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline uint32_t at_load32_relaxed(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void at_store32_relaxed(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline void at_store32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void at_store64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint32_t at_add32_sc(uint32_t *p, uint32_t v) { return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }
static inline uint32_t at_sub32_sc(uint32_t *p, uint32_t v) { return __atomic_sub_fetch(p, v, __ATOMIC_SEQ_CST); }
static inline int
at_cas32(uint32_t *p, uint32_t expected, uint32_t desired)
{
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_RELAXED);
}
static inline int
at_cas32_val(uint32_t *p, uint32_t *expected, uint32_t desired)
{
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST);
}
static inline uint32_t at_xchg32(uint32_t *p, uint32_t v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
/* Process-local flags (not in shared memory). */
static inline int at_loadi(const int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void at_storei(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline int
at_casi(int *p, int expected, int desired)
{
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_RELAXED);
}

#elif defined(_MSC_VER)

#include <intrin.h>     /* _InterlockedExchangeAdd, _ReadWriteBarrier */

static inline uint32_t
at_load32(const uint32_t *p)
{
    uint32_t v = *(const volatile uint32_t *)p;
    _ReadWriteBarrier();
    return v;
}
static inline uint32_t
at_load32_sc(const uint32_t *p)
{
    return (uint32_t)_InterlockedCompareExchange((volatile long *)p, 0, 0);
}
static inline uint64_t
at_load64(const uint64_t *p)
{
    uint64_t v = *(const volatile uint64_t *)p;
    _ReadWriteBarrier();
    return v;
}
static inline uint64_t at_load64_relaxed(const uint64_t *p) { return *(const volatile uint64_t *)p; }
static inline uint32_t at_load32_relaxed(const uint32_t *p) { return *(const volatile uint32_t *)p; }
static inline void at_store32_relaxed(uint32_t *p, uint32_t v) { *(volatile uint32_t *)p = v; }
static inline void
at_store32(uint32_t *p, uint32_t v)
{
    _ReadWriteBarrier();
    *(volatile uint32_t *)p = v;
}
static inline void
at_store64(uint64_t *p, uint64_t v)
{
    _ReadWriteBarrier();
    *(volatile uint64_t *)p = v;
}
static inline uint32_t
at_add32_sc(uint32_t *p, uint32_t v)
{
    return (uint32_t)_InterlockedExchangeAdd((volatile long *)p, (long)v) + v;
}
static inline uint32_t
at_sub32_sc(uint32_t *p, uint32_t v)
{
    return (uint32_t)_InterlockedExchangeAdd((volatile long *)p, -(long)v) - v;
}
static inline int
at_cas32(uint32_t *p, uint32_t expected, uint32_t desired)
{
    return (uint32_t)_InterlockedCompareExchange((volatile long *)p, (long)desired,
                                                 (long)expected) == expected;
}
static inline int
at_cas32_val(uint32_t *p, uint32_t *expected, uint32_t desired)
{
    uint32_t found = (uint32_t)_InterlockedCompareExchange((volatile long *)p, (long)desired,
                                                           (long)*expected);
    if (found == *expected)
        return 1;
    *expected = found;
    return 0;
}
static inline uint32_t
at_xchg32(uint32_t *p, uint32_t v)
{
    return (uint32_t)_InterlockedExchange((volatile long *)p, (long)v);
}
static inline int
at_loadi(const int *p)
{
    int v = *(const volatile int *)p;
    _ReadWriteBarrier();
    return v;
}
static inline void
at_storei(int *p, int v)
{
    _ReadWriteBarrier();
    *(volatile int *)p = v;
}
static inline int
at_casi(int *p, int expected, int desired)
{
    return _InterlockedCompareExchange((volatile long *)p, (long)desired, (long)expected) ==
           (long)expected;
}

#else
#  error "pyshm: no atomic operations for this compiler"
#endif

#endif /* PYSHM_CORE_ATOMICS_H */
