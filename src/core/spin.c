/*
 * core/spin.c -- the spin before a sleep, and how long it lasts (see
 * core/spin.h).
 *
 * Owns: spin_until_moved, spin_learn.
 * May include: the C library, core/ headers, platform/sync.h.  No OS
 * header, no Python.h, no #ifdef.
 */
#include "core/spin.h"

#include "core/atomics.h"    /* the word's loads */
#include "platform/sync.h"   /* sync_now_ns, sync_yield, sync_cpu_relax, sync_cpu, SYNC_SEQ_MASK */

/*
 * Spin budgets, in nanoseconds of spinning (sync_cpu_relax() iterations,
 * ~22-26 ns each on the reference machines, see DESIGN.md; the clock is
 * read every CLOCK_EVERY of them).  A wake-up across CPUs costs 5-30 us,
 * so a spin pays only if the peer answers within about that: the cap is
 * SPIN_MAX_NS.  Every YIELD_EVERY iterations the spinner yields its CPU,
 * because the kernel often wakes a peer onto the waker's CPU: without the
 * yield the peer cannot answer until the spin gives up, and each round
 * trip would cost a whole spin.  The first yield comes only after
 * YIELD_AFTER iterations (~6 us): a peer on another CPU usually answers
 * sooner, and a yield is a system call that may hand the CPU to an
 * unrelated process.
 *
 * When the peer last ran on this very CPU (the CPU hints in the header,
 * stored by each side as it publishes), every iteration yields instead:
 * the peer is most likely waiting for this CPU, and spinning only delays
 * its answer (measured: 12.5 us round trips instead of 2 us).
 *
 * The budget learns, per wait word (channels: senders waiting for space,
 * receivers for data, ring_t.spin; slots: slot_t.spin), whether spinning
 * has paid lately.  A spin that sees the word move paid, and keeps its
 * budget.  A wait that ended in a sleep is judged by when the peer
 * published: a channel's waker that finds a sleeper registered stores the
 * time in the header (data_woken, space_woken) before it wakes it.  Published within SPIN_MAX_NS of the
 * wait's start -- a full spin would have caught it: a peer answering a
 * request, messages close together, a peer that was asleep itself and
 * had to be woken first -- the budget doubles (to SPIN_START_NS when it
 * was 0).  Published later -- an idle peer, messages paced further apart
 * than a spin lasts -- it halves, and below SPIN_MIN_NS it is 0: the
 * waiter blocks at once, spending nothing on spins that do not pay (a
 * steady 10,000 messages a second cost a third of a core when every wait
 * spun its full budget first), until a wait short enough to have been
 * caught brings the spin back.  Where the waker left no time (a slot's
 * publisher never does; the fallback's sleepers are never woken; a waker
 * that read the word before the waiter registered), the sleep itself is judged: shorter than
 * SPIN_SHORT_BLOCK_NS means the peer answered just too late and the budget
 * doubles, longer halves it.  A wait that slept whole slices halves it.
 */
#define CLOCK_EVERY    16u
#define YIELD_AFTER    256u
#define YIELD_EVERY    64u

int
spin_until_moved(uint32_t *word, uint32_t seq, int64_t budget, uint32_t peer_cpu, int can_spin)
{
    int64_t start;
    uint32_t i;
    int share_cpu;

    if (budget <= 0)
        return 0;
    start = sync_now_ns();
    share_cpu = !can_spin || (peer_cpu != 0 && peer_cpu == sync_cpu());
    for (i = 1;; i++) {
        if ((at_load32(word) & SYNC_SEQ_MASK) != (seq & SYNC_SEQ_MASK))
            return 1;
        if (i % CLOCK_EVERY == 0 && sync_now_ns() - start >= budget)
            return 0;
        if (share_cpu || (i >= YIELD_AFTER && i % YIELD_EVERY == 0))
            sync_yield();
        else
            sync_cpu_relax();
    }
}

uint32_t
spin_learn(uint32_t budget, int64_t start, int64_t slept, int64_t woke, int64_t stamp,
           int resumed)
{
    int64_t b = (int64_t)budget;
    int paid;

    if (resumed)
        paid = 0;
    else if (stamp >= start && stamp <= woke)
        paid = stamp - start <= SPIN_MAX_NS;
    else
        paid = woke - slept < SPIN_SHORT_BLOCK_NS;
    if (paid)
        b = b < SPIN_MIN_NS ? SPIN_START_NS : b * 2 > SPIN_MAX_NS ? SPIN_MAX_NS : b * 2;
    else
        b = b / 2 < SPIN_MIN_NS ? 0 : b / 2;
    return (uint32_t)b;
}
