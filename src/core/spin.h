/*
 * core/spin.h -- how a waiter spins before it sleeps, and how long it
 * spins: the one policy of the channels' waits, the slots' waits and the
 * binding's readiness for event loops (core/spin.c has why).
 *
 * Owns: spin_until_moved (the spin) and spin_learn (the budget's rule);
 * the budgets' bounds.  Each caller keeps its own budget (per wait word)
 * and its own hints.
 * May include: the C library, core/ headers, platform/sync.h.
 */
#ifndef PYSHM_CORE_SPIN_H
#define PYSHM_CORE_SPIN_H

#include <stdint.h>

/* The spin budgets (ns of spinning): the shortest spin (a budget learned
   below it is 0: block at once), the first one after a run of sleeps, the
   longest; and a sleep short enough to say that the peer answered just
   too late, where the waker left no wake time. */
#define SPIN_MIN_NS         ((int64_t)1000)
#define SPIN_START_NS       ((int64_t)12000)
#define SPIN_MAX_NS         ((int64_t)50000)
#define SPIN_SHORT_BLOCK_NS ((int64_t)100000)

/*
 * Spin for BUDGET ns at most until the sequence part (SYNC_SEQ_MASK) of
 * *WORD moves from SEQ's: 1 when it moved, 0 when the budget ran out (at
 * once for a budget <= 0).  PEER_CPU is the CPU the side that moves the
 * word last ran on (a hint from shared memory: 0 unknown, garbage costs a
 * few needless yields), CAN_SPIN that this machine has more than one CPU.
 */
int spin_until_moved(uint32_t *word, uint32_t seq, int64_t budget, uint32_t peer_cpu,
                     int can_spin);

/*
 * The next budget after a wait that spun BUDGET ns at most, began at
 * START, went to sleep at SLEPT and was woken at WOKE (sync_now_ns()
 * values); STAMP is the waker's wake time of that word as read after it
 * (any value: it counts only when it lies within the wait; INT64_MIN where
 * wakers leave none), RESUMED that the wait had already slept whole slices.
 */
uint32_t spin_learn(uint32_t budget, int64_t start, int64_t slept, int64_t woke, int64_t stamp,
                    int resumed);

#endif /* PYSHM_CORE_SPIN_H */
