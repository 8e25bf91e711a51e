/*
 * platform/ready_linux.c -- readiness on Linux (futex build): io_uring's
 * futex waits on the channel's own words, else the thread engine; waits on
 * many words with futex_waitv; the thread engine's sleep.
 *
 * Owns: sync_ready on Linux (the io_uring engine, the choice of engine),
 * sync_wait_many, sync_watch_register, sync_park_sleep/wake/pass/max.
 * May include: the C library, POSIX and Linux headers, platform/ready.h,
 * core/atomics.h.  No Python.h.
 *
 * The io_uring engine (see platform/ready.h for why).  Each sync_ready is a
 * small ring of its own (16 entries), made without SQPOLL or
 * DEFER_TASKRUN: completions are posted by the kernel's task work and the
 * ring's descriptor polls readable as soon as one is there, in whatever
 * thread waits on it.  Arming a watch registers as a waiter of the word the
 * way sync_wait() does (the waiter bit, set by compare-and-swap from the
 * value seen) and submits IORING_OP_FUTEX_WAIT on that value: a sender's
 * FUTEX_WAKE (it makes one only because the bit is set) completes it; a
 * word that moved before the request reached the kernel completes it at
 * once (-EAGAIN).  Disarming first moves the completions in the ring into
 * the watches' state (ur_reap): an arm that ended already needs no cancel
 * -- the usual case of a waiter that found its message after all.  Else it
 * submits IORING_OP_ASYNC_CANCEL: the kernel's futex queue holds nothing of
 * ours afterwards (the waiter bit stays until the next bump, which clears
 * it: one needless wake at most, as with a sync waiter that timed out).
 * What a reap took for other watches stays visible: a NOP's completion
 * keeps the descriptor readable until take().  Every request carries a generation in its
 * user_data, so that completions of requests cancelled or replaced are
 * told apart from the current one's.  Closing the ring's descriptor
 * cancels whatever is left.  A process killed while armed: the kernel
 * tears its rings down; the bit it left costs the next sender one wake.
 *
 * The engine is chosen once per process: io_uring when io_uring_setup
 * works and IORING_REGISTER_PROBE lists IORING_OP_FUTEX_WAIT (kernel 6.7);
 * else the thread engine (ready_thread.c).  PYSHM_READY=thread in the
 * environment picks the thread engine (to test it where io_uring works).
 *
 * Structures of the io_uring ABI are declared here (stable since 5.1, the
 * futex opcode since 6.7), not taken from <linux/io_uring.h>: the build
 * hosts' headers are often older than the kernels the wheels run on.
 */
#include "platform/ready.h"

#include <errno.h>          /* EINTR, EAGAIN, ENOSYS, ... */
#include <limits.h>         /* INT_MAX */
#include <linux/futex.h>    /* FUTEX_WAKE */
#include <pthread.h>        /* the submission lock, pthread_once */
#include <stdlib.h>         /* calloc, free, getenv */
#include <string.h>         /* memset, strcmp */
#include <sys/mman.h>       /* mmap, munmap */
#include <sys/syscall.h>    /* SYS_futex, the io_uring calls */
#include <time.h>           /* struct timespec, CLOCK_MONOTONIC */
#include <unistd.h>         /* syscall, close */

#include "core/atomics.h"   /* the shared words, the ring's head and tail */

/* System call numbers: the same on every architecture (the unified table). */
#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif
#ifndef __NR_futex_waitv
#define __NR_futex_waitv 449
#endif

/* ---- the io_uring ABI (include/uapi/linux/io_uring.h) ------------------------ */

typedef struct {
    uint8_t opcode;
    uint8_t flags;
    uint16_t ioprio;
    int32_t fd;             /* FUTEX_WAIT: the futex2 flags */
    uint64_t off;           /* FUTEX_WAIT: the value (addr2) */
    uint64_t addr;          /* FUTEX_WAIT: the word; ASYNC_CANCEL: the user_data */
    uint32_t len;
    uint32_t op_flags;
    uint64_t user_data;
    uint16_t buf_index;
    uint16_t personality;
    uint32_t file_index;
    uint64_t addr3;         /* FUTEX_WAIT: the bitset mask */
    uint64_t pad2;
} ur_sqe;

typedef struct {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
} ur_cqe;

typedef struct {
    uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1;
    uint64_t user_addr;
} ur_sq_off;

typedef struct {
    uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1;
    uint64_t user_addr;
} ur_cq_off;

typedef struct {
    uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd;
    uint32_t resv[3];
    ur_sq_off sq_off;
    ur_cq_off cq_off;
} ur_params;

typedef struct {
    uint8_t op;
    uint8_t resv;
    uint16_t flags;
    uint32_t resv2;
} ur_probe_op;

typedef struct {
    uint8_t last_op;
    uint8_t ops_len;
    uint16_t resv;
    uint32_t resv2[3];
    ur_probe_op ops[256];
} ur_probe;

typedef char ur_check_sqe[sizeof(ur_sqe) == 64 ? 1 : -1];
typedef char ur_check_cqe[sizeof(ur_cqe) == 16 ? 1 : -1];
typedef char ur_check_params[sizeof(ur_params) == 120 ? 1 : -1];

#define UR_OP_NOP               0
#define UR_OP_ASYNC_CANCEL      14
#define UR_OP_FUTEX_WAIT        51      /* Linux 6.7 */
#define UR_FEAT_SINGLE_MMAP     (1u << 0)
#define UR_OFF_SQ_RING          0ULL
#define UR_OFF_SQES             0x10000000ULL
#define UR_REGISTER_PROBE       8
#define UR_OP_SUPPORTED         1u
#define UR_FUTEX2_SIZE_U32      0x02u   /* futex2 flags: a 32-bit word, shared */
#define UR_FUTEX_MATCH_ANY      0xffffffffULL

#define UR_ENTRIES 16u          /* per object: 4 watches, each a wait and a cancel */

/* user_data: kind, watch, generation. */
#define UD_WAIT   1ULL
#define UD_CANCEL 2ULL
#define UD_NOP    3ULL
#define UD(kind, n, gen) (((kind) << 56) | ((uint64_t)(n) << 48) | ((gen) & 0xffffffffffffULL))
#define UD_KIND(ud) ((ud) >> 56)
#define UD_WATCH(ud) ((unsigned)(((ud) >> 48) & 0xffu))
#define UD_GEN(ud) ((ud) & 0xffffffffffffULL)

/* ---- engine choice ------------------------------------------------------------ */

enum { ENGINE_URING = 1, ENGINE_THREAD = 2 };

static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static int engine_kind;         /* written once under engine_once */

static long
ur_setup(unsigned entries, ur_params *p)
{
    return syscall(__NR_io_uring_setup, entries, p);
}

static long
ur_enter(int fd, unsigned to_submit)
{
    return syscall(__NR_io_uring_enter, fd, to_submit, 0, 0, NULL, 0);
}

static void
choose_engine(void)
{
    const char *forced = getenv("PYSHM_READY");
    ur_params p;
    ur_probe *probe;
    long fd;
    int ok = 0;

    engine_kind = ENGINE_THREAD;
    if (forced != NULL && strcmp(forced, "thread") == 0)
        return;
    memset(&p, 0, sizeof p);
    /* ENOSYS (old kernel, or a seccomp filter answering so), EPERM
       (kernel.io_uring_disabled, seccomp): the thread engine. */
    fd = ur_setup(2, &p);
    if (fd < 0)
        return;
    probe = calloc(1, sizeof *probe);
    if (probe != NULL &&
        syscall(__NR_io_uring_register, (int)fd, UR_REGISTER_PROBE, probe, 256) == 0 &&
        probe->last_op >= UR_OP_FUTEX_WAIT &&
        (probe->ops[UR_OP_FUTEX_WAIT].flags & UR_OP_SUPPORTED))
        ok = 1;
    free(probe);
    (void)close((int)fd);
    if (ok)
        engine_kind = ENGINE_URING;
}

/* ---- the io_uring engine -------------------------------------------------------- */

typedef struct {
    int armed;              /* a FUTEX_WAIT of generation GEN is in the kernel */
    int woken;              /* its completion said "woken" (0), not "moved" */
    uint64_t gen;
    sync_watch w;
} ur_watch;

struct sync_ready {
    int engine;
    sync_thr *thr;              /* ENGINE_THREAD */
    int fd;                     /* the ring (ENGINE_URING); -1 none */
    void *ring;
    size_t ring_size;
    ur_sqe *sqes;
    size_t sqes_size;
    uint32_t *sq_head, *sq_tail, *sq_array, sq_mask, sq_entries;
    uint32_t *cq_head, *cq_tail, cq_mask;
    ur_cqe *cqes;
    ur_watch watch[SYNC_READY_WATCHES];
    unsigned fired;             /* watches whose completion was reaped, not yet taken */
    unsigned woken;             /* ... of them, lock watches woken (pass the wake on) */
    int nop_pending;            /* a wake's NOP not yet reaped */
    int waked;                  /* a wake's NOP reaped, not yet taken */
    pthread_mutex_t lock;       /* submissions and reaping (wake() may come from
                                   any thread) */
};

static void
ur_unmap(struct sync_ready *r)
{
    if (r->ring != NULL)
        (void)munmap(r->ring, r->ring_size);
    if (r->sqes != NULL)
        (void)munmap(r->sqes, r->sqes_size);
    r->ring = NULL;
    r->sqes = NULL;
    if (r->fd >= 0)
        (void)close(r->fd);
    r->fd = -1;
}

static shm_status
ur_open(struct sync_ready *r, shm_error *err)
{
    ur_params p;
    size_t sq_size, cq_size;
    unsigned char *ring;
    long fd;
    int code;

    memset(&p, 0, sizeof p);
    fd = ur_setup(UR_ENTRIES, &p);
    if (fd < 0)
        return shm_fail_os(err, "io_uring_setup", errno);
    r->fd = (int)fd;
    if (!(p.features & UR_FEAT_SINGLE_MMAP)) {
        /* Kernels without it (before 5.4) have no futex opcode either. */
        ur_unmap(r);
        return shm_fail_os(err, "io_uring_setup", ENOSYS);
    }
    sq_size = p.sq_off.array + p.sq_entries * sizeof(uint32_t);
    cq_size = p.cq_off.cqes + p.cq_entries * sizeof(ur_cqe);
    r->ring_size = sq_size > cq_size ? sq_size : cq_size;
    r->ring = mmap(NULL, r->ring_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                   r->fd, (off_t)UR_OFF_SQ_RING);
    if (r->ring == MAP_FAILED) {
        code = errno;
        r->ring = NULL;
        ur_unmap(r);
        return shm_fail_os(err, "mmap", code);
    }
    r->sqes_size = p.sq_entries * sizeof(ur_sqe);
    r->sqes = mmap(NULL, r->sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                   r->fd, (off_t)UR_OFF_SQES);
    if (r->sqes == MAP_FAILED) {
        code = errno;
        r->sqes = NULL;
        ur_unmap(r);
        return shm_fail_os(err, "mmap", code);
    }
    ring = (unsigned char *)r->ring;
    r->sq_head = (uint32_t *)(ring + p.sq_off.head);
    r->sq_tail = (uint32_t *)(ring + p.sq_off.tail);
    r->sq_array = (uint32_t *)(ring + p.sq_off.array);
    r->sq_mask = *(uint32_t *)(ring + p.sq_off.ring_mask);
    r->sq_entries = p.sq_entries;
    r->cq_head = (uint32_t *)(ring + p.cq_off.head);
    r->cq_tail = (uint32_t *)(ring + p.cq_off.tail);
    r->cq_mask = *(uint32_t *)(ring + p.cq_off.ring_mask);
    r->cqes = (ur_cqe *)(ring + p.cq_off.cqes);
    return SHM_OK;
}

/* Queue one request and hand it to the kernel (R->lock held).  0 or errno. */
static int
ur_submit(struct sync_ready *r, uint8_t opcode, int32_t fd, uint64_t addr, uint64_t off,
          uint64_t addr3, uint64_t user_data)
{
    uint32_t tail = at_load32_relaxed(r->sq_tail), idx;
    ur_sqe *sqe;
    long rc;

    /* We are the only producer and submit each entry at once: the queue
       is empty unless an earlier io_uring_enter failed. */
    if (tail - at_load32(r->sq_head) >= r->sq_entries)
        return EBUSY;
    idx = tail & r->sq_mask;
    sqe = &r->sqes[idx];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = opcode;
    sqe->fd = fd;
    sqe->addr = addr;
    sqe->off = off;
    sqe->addr3 = addr3;
    sqe->user_data = user_data;
    r->sq_array[idx] = idx;
    at_store32(r->sq_tail, tail + 1);
    do {
        rc = ur_enter(r->fd, 1);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        int code = errno;
        /* Not consumed: take it back, so the queue stays empty. */
        if (at_load32(r->sq_head) == tail)
            at_store32(r->sq_tail, tail);
        return code;
    }
    return 0;
}

static long
futex_call(uint32_t *word, int op, uint32_t val)
{
    return syscall(SYS_futex, word, op, val, NULL, NULL, 0);
}

uint32_t
sync_watch_register(const sync_watch *w, int *free_lock)
{
    uint32_t v = at_load32_sc(w->word);

    *free_lock = 0;
    for (;;) {
        if (w->lock && v == 0) {
            *free_lock = 1;
            return 0;
        }
        if (v & SYNC_WAITERS)
            return v;
        /* As sync_wait() registers: the waker clears the bit and wakes
           only when it is set. */
        if (at_cas32_val(w->word, &v, v | SYNC_WAITERS))
            return v | SYNC_WAITERS;
    }
}

/* ---- sync_ready ------------------------------------------------------------------ */

static void
choose(void)
{
    (void)pthread_once(&engine_once, choose_engine);
}

shm_status
sync_ready_open(sync_ready **out, shm_error *err)
{
    struct sync_ready *r;
    shm_status status;

    choose();
    r = calloc(1, sizeof *r);
    if (r == NULL)
        return shm_fail_os(err, "calloc", ENOMEM);
    r->fd = -1;
    r->engine = engine_kind;
    if (r->engine == ENGINE_THREAD) {
        status = sync_thr_open(&r->thr, err);
        if (status != SHM_OK) {
            free(r);
            return status;
        }
        *out = r;
        return SHM_OK;
    }
    if (pthread_mutex_init(&r->lock, NULL) != 0) {
        free(r);
        return shm_fail_os(err, "pthread_mutex_init", ENOMEM);
    }
    status = ur_open(r, err);
    if (status != SHM_OK) {
        (void)pthread_mutex_destroy(&r->lock);
        free(r);
        return status;
    }
    *out = r;
    return SHM_OK;
}

void
sync_ready_close(sync_ready *r)
{
    if (r == NULL)
        return;
    if (r->engine == ENGINE_THREAD) {
        sync_thr_close(r->thr);
    } else {
        /* Closing the ring cancels its futex waits: nothing stays queued. */
        ur_unmap(r);
        (void)pthread_mutex_destroy(&r->lock);
    }
    free(r);
}

void
sync_ready_forget(sync_ready *r)
{
    if (r == NULL)
        return;
    if (r->engine == ENGINE_THREAD) {
        sync_thr_forget(r->thr);
    } else {
        /* The ring is the parent's too: our copies of its mappings and
           descriptor go, the parent's stay.  The lock may have been held
           by a thread of the parent at the fork: not used again. */
        ur_unmap(r);
    }
    free(r);
}

intptr_t
sync_ready_fd(const sync_ready *r)
{
    return r->engine == ENGINE_THREAD ? sync_thr_fd(r->thr) : r->fd;
}

intptr_t
sync_ready_handle(const sync_ready *r)
{
    return sync_ready_fd(r);
}

const char *
sync_ready_engine(const sync_ready *r)
{
    return r->engine == ENGINE_THREAD ? "thread" : "io_uring";
}

shm_status
sync_ready_arm(sync_ready *r, unsigned n, const sync_watch *w, int *now, shm_error *err)
{
    ur_watch *x;
    uint32_t v;
    int free_lock, rc;

    if (r->engine == ENGINE_THREAD)
        return sync_thr_arm(r->thr, n, w, now, err);
    *now = 0;
    x = &r->watch[n];
    if (x->armed)
        return SHM_OK;
    v = sync_watch_register(w, &free_lock);
    if (free_lock) {
        *now = 1;
        return SHM_OK;
    }
    (void)pthread_mutex_lock(&r->lock);
    x->gen++;
    rc = ur_submit(r, UR_OP_FUTEX_WAIT, (int32_t)UR_FUTEX2_SIZE_U32, (uint64_t)(uintptr_t)w->word,
                   (uint64_t)v, UR_FUTEX_MATCH_ANY, UD(UD_WAIT, n, x->gen));
    if (rc == 0) {
        x->armed = 1;
        x->woken = 0;
        x->w = *w;
    }
    (void)pthread_mutex_unlock(&r->lock);
    if (rc != 0)
        return shm_fail_os(err, "io_uring_enter", rc);
    return SHM_OK;
}

/* Move the completions in the ring into the watches' state (R->lock
   held): an arm they end is over (FIRED, and WOKEN for a lock watch that
   its release woke); the ring is empty afterwards, so its descriptor is no
   longer readable for them. */
static void
ur_reap(struct sync_ready *r)
{
    uint32_t head = at_load32_relaxed(r->cq_head), tail = at_load32(r->cq_tail);
    unsigned n;
    ur_cqe *c;
    ur_watch *x;

    for (; head != tail; head++) {
        c = &r->cqes[head & r->cq_mask];
        switch (UD_KIND(c->user_data)) {
        case UD_WAIT:
            n = UD_WATCH(c->user_data);
            if (n >= SYNC_READY_WATCHES)
                break;
            x = &r->watch[n];
            if (!x->armed || UD_GEN(c->user_data) != (x->gen & 0xffffffffffffULL))
                break;      /* cancelled or replaced */
            /* 0: woken; -EAGAIN: the word had moved; anything else
               (-EFAULT...) also ends the arm: the caller looks again. */
            x->armed = 0;
            r->fired |= 1u << n;
            if (c->res == 0 && x->w.lock)
                r->woken |= 1u << n;
            break;
        case UD_NOP:
            r->nop_pending = 0;
            r->waked = 1;
            break;
        default:
            break;
        }
    }
    at_store32(r->cq_head, head);
}

/* Make the descriptor readable (R->lock held): a NOP's completion. */
static void
ur_nop(struct sync_ready *r)
{
    if (!r->nop_pending && ur_submit(r, UR_OP_NOP, -1, 0, 0, 0, UD(UD_NOP, 0, 0)) == 0)
        r->nop_pending = 1;
}

void
sync_ready_disarm(sync_ready *r, unsigned n)
{
    ur_watch *x;
    int pass = 0;

    if (r->engine == ENGINE_THREAD) {
        sync_thr_disarm(r->thr, n);
        return;
    }
    x = &r->watch[n];
    (void)pthread_mutex_lock(&r->lock);
    /* Its completion may be in the ring already (the word moved, a waker
       came): then there is nothing to cancel. */
    ur_reap(r);
    if (x->armed) {
        x->armed = 0;
        /* Its completion (-ECANCELED, or 0 if a wake won) is of an old
           generation by the time anyone arms N again: ignored.  Should the
           cancel itself fail to be queued, the wait stays until the word's
           next move, or the ring's close. */
        (void)ur_submit(r, UR_OP_ASYNC_CANCEL, -1, UD(UD_WAIT, n, x->gen), 0, 0,
                        UD(UD_CANCEL, n, x->gen));
    }
    pass = (r->woken & (1u << n)) != 0;
    r->fired &= ~(1u << n);
    r->woken &= ~(1u << n);
    /* What the reap took of the other watches, or of a wake, must still be
       seen. */
    if (r->fired != 0 || r->waked)
        ur_nop(r);
    (void)pthread_mutex_unlock(&r->lock);
    if (pass)
        sync_park_pass(x->w.word);      /* as take() would have (see there) */
}

unsigned
sync_ready_take(sync_ready *r)
{
    unsigned fired, woken, n;

    if (r->engine == ENGINE_THREAD)
        return sync_thr_take(r->thr);
    (void)pthread_mutex_lock(&r->lock);
    ur_reap(r);
    fired = r->fired;
    woken = r->woken;
    r->fired = r->woken = 0;
    r->waked = 0;
    (void)pthread_mutex_unlock(&r->lock);
    /* A lock's release woke us, one sleeper of it: its other sleepers
       would sleep on until their slice ends if we do not take the lock
       after all, so the wake is passed on (spurious wakes are harmless,
       lost ones are not). */
    for (n = 0; n < SYNC_READY_WATCHES; n++)
        if (woken & (1u << n))
            sync_park_pass(r->watch[n].w.word);
    return fired;
}

void
sync_ready_wake(sync_ready *r)
{
    if (r->engine == ENGINE_THREAD) {
        sync_thr_wake(r->thr);
        return;
    }
    (void)pthread_mutex_lock(&r->lock);
    ur_nop(r);
    (void)pthread_mutex_unlock(&r->lock);
}

/* ---- many words at once: futex_waitv (Linux 5.16) ------------------------------- */

typedef struct {
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t reserved;
} waitv_entry;

#define WAITV_MAX 128           /* FUTEX_WAITV_MAX */
#define WAITV_SIZE_U32 0x02u    /* FUTEX2_SIZE_U32; shared (no FUTEX2_PRIVATE) */

static int waitv_missing;       /* futex_waitv said ENOSYS once: never again */

/* futex_waitv(2) on N entries until UNTIL (sync_now_ns, absolute on
   CLOCK_MONOTONIC; SYNC_FOREVER: none).  0 (woken, or a value differed),
   or errno. */
static int
waitv(const waitv_entry *v, size_t n, int64_t until)
{
    struct timespec ts, *tsp = NULL;
    long rc;

    if (until != SYNC_FOREVER) {
        ts.tv_sec = (time_t)(until / SYNC_NS_PER_S);
        ts.tv_nsec = (long)(until % SYNC_NS_PER_S);
        tsp = &ts;
    }
    rc = syscall(__NR_futex_waitv, v, (unsigned)n, 0, tsp, CLOCK_MONOTONIC);
    if (rc >= 0)
        return 0;
    if (errno == EAGAIN)
        return 0;
    if (errno == ENOSYS)
        at_storei(&waitv_missing, 1);
    return errno;
}

shm_status
sync_wait_many(const sync_watch *w, const uint32_t *seen, size_t n, int64_t until,
               shm_error *err)
{
    waitv_entry v[WAITV_MAX];
    size_t i;
    uint32_t cur;
    int free_lock, rc;

    if (n > WAITV_MAX || at_loadi(&waitv_missing))
        return shm_fail(err, SHM_EVALUE, "futex_waitv cannot wait on these words");
    for (i = 0; i < n; i++) {
        cur = sync_watch_register(&w[i], &free_lock);
        if ((cur ^ seen[i]) & SYNC_SEQ_MASK)
            return SHM_OK;          /* moved since the caller looked */
        v[i].val = cur;
        v[i].uaddr = (uint64_t)(uintptr_t)w[i].word;
        v[i].flags = WAITV_SIZE_U32;
        v[i].reserved = 0;
    }
    if (until <= sync_now_ns())
        return shm_fail(err, SHM_ETIMEOUT, "timed out");
    rc = waitv(v, n, until);
    switch (rc) {
    case 0:
        return SHM_OK;
    case ETIMEDOUT:
        return shm_fail(err, SHM_ETIMEOUT, "timed out");
    case EINTR:
        return shm_fail(err, SHM_EINTR, "interrupted");
    case ENOSYS:
        return shm_fail(err, SHM_EVALUE, "futex_waitv is not available");
    default:
        return shm_fail_os(err, "futex_waitv", rc);
    }
}

/* ---- the thread engine's sleep ---------------------------------------------------- */

size_t
sync_park_max(void)
{
    /* Before Linux 5.16 the sleep is a nap that looks at no word. */
    return at_loadi(&waitv_missing) ? SIZE_MAX : WAITV_MAX;
}

void
sync_park_sleep(const sync_park *p, size_t n, int64_t until, int64_t *backoff)
{
    waitv_entry v[WAITV_MAX];
    size_t i;
    int64_t now;
    struct timespec ts;

    if (n > WAITV_MAX)
        n = WAITV_MAX;      /* sync_park_max(): never, unless futex_waitv went missing */
    if (!at_loadi(&waitv_missing)) {
        for (i = 0; i < n; i++) {
            v[i].val = p[i].value;
            v[i].uaddr = (uint64_t)(uintptr_t)p[i].word;
            v[i].flags = WAITV_SIZE_U32;
            v[i].reserved = 0;
        }
        if (waitv(v, n, until) != ENOSYS)
            return;
    }
    /* Before Linux 5.16: one backoff nap; the caller looks at the words. */
    now = sync_now_ns();
    if (until <= now)
        return;
    if (until - now < *backoff)
        *backoff = until - now;
    ts.tv_sec = (time_t)(*backoff / SYNC_NS_PER_S);
    ts.tv_nsec = (long)(*backoff % SYNC_NS_PER_S);
    (void)nanosleep(&ts, NULL);
    *backoff = *backoff * 2 > 2000000 ? 2000000 : *backoff * 2;
}

void
sync_park_wake(uint32_t *word)
{
    (void)futex_call(word, FUTEX_WAKE, INT_MAX);
}

void
sync_park_pass(uint32_t *word)
{
    (void)futex_call(word, FUTEX_WAKE, 1);
}
