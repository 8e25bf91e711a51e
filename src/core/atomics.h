/*
 * core/atomics.h -- the few atomic operations the channel core (core/ring.c),
 * the slot core (core/slot.c) and the sync files (platform/sync_*.c) need, on
 * words that live in shared memory.
 *
 * Owns: the at_* loads, stores, adds, compare-and-swap and fences.
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
 * for compare-and-swap loops; at_cas64_val is its 64-bit twin.
 *
 * Fences (the slot's seqlock-style validation, core/slot.c): at_fence_release
 * keeps every earlier load and store before every later store;
 * at_fence_acquire keeps every earlier load before every later load and
 * store.  Their use is the classic sequence lock: the writer marks a cell
 * busy, fences, copies; the reader copies, fences, reads the mark again.
 * at_fence_sc is a full barrier (a store before it is visible before any
 * load after it).
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
static inline uint64_t at_load64_sc(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void at_store64_sc(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline void at_store64_relaxed(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline int
at_cas64_val(uint64_t *p, uint64_t *expected, uint64_t desired)
{
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST);
}
static inline void at_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void at_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
static inline void at_fence_sc(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
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

#include <intrin.h>     /* _Interlocked*, _ReadWriteBarrier, __faststorefence, __dmb */

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
static inline uint64_t
at_load64_sc(const uint64_t *p)
{
    return (uint64_t)_InterlockedCompareExchange64((volatile __int64 *)p, 0, 0);
}
static inline void
at_store64_sc(uint64_t *p, uint64_t v)
{
    (void)_InterlockedExchange64((volatile __int64 *)p, (__int64)v);
}
static inline void at_store64_relaxed(uint64_t *p, uint64_t v) { *(volatile uint64_t *)p = v; }
static inline int
at_cas64_val(uint64_t *p, uint64_t *expected, uint64_t desired)
{
    uint64_t found = (uint64_t)_InterlockedCompareExchange64((volatile __int64 *)p,
                                                             (__int64)desired,
                                                             (__int64)*expected);
    if (found == *expected)
        return 1;
    *expected = found;
    return 0;
}
/* x86-64 keeps loads and stores in order except a store before a later
   load: a compiler barrier is enough for acquire and release, a full
   barrier only for the sequentially consistent fence.  ARM64 needs the
   hardware barrier for all three. */
#if defined(_M_ARM64)
static inline void at_fence_acquire(void) { __dmb(_ARM64_BARRIER_ISH); }
static inline void at_fence_release(void) { __dmb(_ARM64_BARRIER_ISH); }
static inline void at_fence_sc(void) { __dmb(_ARM64_BARRIER_ISH); }
#else
static inline void at_fence_acquire(void) { _ReadWriteBarrier(); }
static inline void at_fence_release(void) { _ReadWriteBarrier(); }
static inline void at_fence_sc(void) { __faststorefence(); }
#endif
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
