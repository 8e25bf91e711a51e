/*
 * sync_linux_test -- the futex scheme's channel locks
 * (src/platform/sync_linux.c) on the paths that channel traffic reaches
 * only by chance, each driven on purpose; no Python.  Built by the Makefile
 * from the groups core, posix and linux of src/sources.txt.
 *
 *   sync_linux_test      run every check; prints "all passed" at the end
 *
 * Two objects of one channel in this process (two attachments: two open
 * file descriptions, two liveness slots) play the owner and the waiter;
 * the waiter runs in a thread.  "Asleep" is read from the kernel, never
 * guessed from time: the waiter's thread is blocked in FUTEX_WAIT on the
 * lock word's address (/proc/self/task/TID/syscall) with SYNC_WAITERS set
 * in the word.  Checks:
 *
 *   - a waiter that took the lock after sleeping keeps SYNC_WAITERS in the
 *     word (others may sleep too: its unlock must wake them);
 *   - the owner changed while the waiter slept (the word named the
 *     waiter's own slot, as when another thread of its object holds the
 *     lock, and then a dead process's): woken, it probes the new owner and
 *     takes the lock over in the same call; a live new owner keeps it
 *     until it dies;
 *   - a lock word garbled while the waiter slept: SHM_ECORRUPT;
 *   - a signal ends the lock's FUTEX_WAIT: SHM_EINTR "interrupted", not a
 *     slice's end; a lock that stays held until the deadline: FUTEX_WAIT's
 *     ETIMEDOUT, then SHM_ETIMEOUT.
 *
 * Exit code 0 only when all passed.
 */
#include "core/ring.h"

#include <errno.h>          /* EINTR */
#include <fcntl.h>          /* open */
#include <limits.h>         /* INT_MAX */
#include <linux/futex.h>    /* FUTEX_WAKE */
#include <pthread.h>        /* the waiter thread, pthread_kill */
#include <signal.h>         /* sigaction, SIGUSR1, SIGKILL */
#include <stdio.h>          /* printf, fprintf, snprintf */
#include <stdlib.h>         /* getenv, strtoul */
#include <string.h>         /* strcmp, memset */
#include <sys/syscall.h>    /* SYS_futex, SYS_gettid */
#include <sys/wait.h>       /* waitpid */
#include <time.h>           /* nanosleep */
#include <unistd.h>         /* fork, pipe, read, write, _exit */

#include "core/atomics.h"   /* the shared lock word, the waiter's progress */
#include "ring_harness.h"   /* test_ring, in_seconds */

#define CHECK(cond) do { if (!(cond)) fail(__LINE__, #cond); } while (0)
#define OWNER(v) ((v) & ~SYNC_WAITERS)

static void
fail(int line, const char *what)
{
    fprintf(stderr, "sync_linux_test: line %d: check failed: %s (pid %d)\n", line, what,
            (int)getpid());
    fflush(stderr);
    _exit(1);
}

#ifdef PYSHM_COVERAGE
extern void __gcov_dump(void);      /* libgcov: write the line counts now */
#endif

/* A forked child's end: _exit (nothing of the parent's stdio or atexit
   runs), after writing a coverage build's counts, which _exit would lose. */
static void
child_exit(int code)
{
#ifdef PYSHM_COVERAGE
    __gcov_dump();
#endif
    _exit(code);
}

static void
make_chan(test_ring *t, const char *tag)
{
    const char *prefix = getenv("PYSHM_TEST_PREFIX");
    shm_error err;

    snprintf(t->name, sizeof t->name, "%s%s_%d", prefix != NULL ? prefix : "stest_", tag,
             (int)getpid());
    CHECK(test_ring_create(t, 4096, &err) == SHM_OK);
}

static void
open_chan(test_ring *t, const test_ring *made)
{
    shm_error err;

    memcpy(t->name, made->name, sizeof t->name);
    CHECK(test_ring_open(t, &err) == SHM_OK);
}

static void
drop_chan(test_ring *t)
{
    shm_error err;

    test_ring_close(t);
    (void)shm_segment_unlink(t->name, &err);
}

/* The send lock's word as T's mapping sees it (each attachment maps the
   segment at its own address; futexes on shared memory are keyed by the
   page, so a wake through one address reaches waiters on the other). */
static uint32_t *
send_word(test_ring *t)
{
    return &t->ch.hdr->send_lock;
}

/* A pause between two looks at something another thread or the kernel
   changes: paces a poll that has a deadline, stands in for nothing. */
static void
pace(void)
{
    struct timespec ts = {0, 1000000};
    (void)nanosleep(&ts, NULL);
}

/* ---- the waiter thread ------------------------------------------------------ */

typedef struct {
    test_ring *t;               /* the object it locks through */
    int64_t deadline;
    pthread_t thread;
    int tid;                    /* its kernel thread id, once running */
    int calls;                  /* sync_lock() calls started */
    int interrupted_call;       /* the last call that returned "interrupted", or 0 */
    int done;                   /* set last: status and status_call are final */
    shm_status status;          /* of the last call */
    int status_call;            /* which call that was */
} waiter;

/* sync_lock() as the ring calls it: again after every SHM_EINTR (a slice
   ended, or a signal came), with the same deadline. */
static void *
waiter_main(void *arg)
{
    waiter *w = arg;
    shm_error err;
    shm_status st;
    int call;

    at_storei(&w->tid, (int)syscall(SYS_gettid));
    for (;;) {
        call = at_loadi(&w->calls) + 1;
        at_storei(&w->calls, call);
        st = sync_lock(&w->t->ch.sync, SYNC_LOCK_SEND, send_word(w->t), w->deadline, &err);
        if (st == SHM_EINTR) {
            if (strcmp(err.detail, "interrupted") == 0)
                at_storei(&w->interrupted_call, call);
            continue;
        }
        break;
    }
    w->status = st;
    w->status_call = call;
    at_storei(&w->done, 1);
    return NULL;
}

static void
waiter_start(waiter *w, test_ring *t, double seconds)
{
    memset(w, 0, sizeof *w);
    w->t = t;
    w->deadline = in_seconds(seconds);
    CHECK(pthread_create(&w->thread, NULL, waiter_main, w) == 0);
}

static void
waiter_join(waiter *w)
{
    CHECK(pthread_join(w->thread, NULL) == 0);
    CHECK(at_loadi(&w->done));
}

/* Whether W's thread is blocked in FUTEX_WAIT on ADDR right now: the first
   two fields of /proc/self/task/TID/syscall are the call's number and its
   first argument ("running" when it is in no system call). */
static int
blocked_on(const waiter *w, const uint32_t *addr)
{
    char path[64], buf[256];
    unsigned long nr, arg0;
    ssize_t n;
    int fd;

    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", at_loadi(&w->tid));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof buf - 1);
    (void)close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    if (sscanf(buf, "%lu %lx", &nr, &arg0) != 2)
        return 0;
    return nr == (unsigned long)SYS_futex && arg0 == (unsigned long)(uintptr_t)addr;
}

/* Wait (deadline, no guess) until W sleeps on the lock: blocked in
   FUTEX_WAIT on its word, with SYNC_WAITERS set.  Returns the call it
   sleeps in. */
static int
wait_asleep(const waiter *w)
{
    uint32_t *word = send_word(w->t);
    int64_t end = in_seconds(30);
    int call;

    for (;;) {
        call = at_loadi(&w->calls);
        if (!at_loadi(&w->done) && at_loadi(&w->tid) != 0 && blocked_on(w, word) &&
            (at_load32(word) & SYNC_WAITERS) && at_loadi(&w->calls) == call)
            return call;
        CHECK(!at_loadi(&w->done));
        CHECK(sync_now_ns() < end);
        pace();
    }
}

static void
futex_wake_all(uint32_t *word)
{
    (void)syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* ---- other processes' slots ------------------------------------------------ */

/* A child that attaches to T's channel (a liveness slot of its own) and
   reports the slot; then waits for a byte (or the end) on GO and exits. */
typedef struct {
    pid_t pid;
    uint32_t slot;
    int go;                     /* write end: close it to let the child exit */
} slot_owner;

static void
owner_start(slot_owner *o, const test_ring *t)
{
    int up[2], down[2];
    test_ring mine;
    char c;

    CHECK(pipe(up) == 0 && pipe(down) == 0);
    o->pid = fork();
    CHECK(o->pid >= 0);
    if (o->pid == 0) {
        (void)close(up[0]);
        (void)close(down[1]);
        open_chan(&mine, t);
        CHECK(write(up[1], &mine.ch.sync.slot, sizeof mine.ch.sync.slot) ==
              (ssize_t)sizeof mine.ch.sync.slot);
        (void)read(down[0], &c, 1);
        test_ring_close(&mine);
        child_exit(0);
    }
    (void)close(up[1]);
    (void)close(down[0]);
    CHECK(read(up[0], &o->slot, sizeof o->slot) == (ssize_t)sizeof o->slot);
    (void)close(up[0]);
    CHECK(o->slot >= 1);
    o->go = down[1];
}

/* Let the owner exit and reap it: its slot's byte is free from then on. */
static void
owner_end(slot_owner *o)
{
    int status = 0;

    (void)close(o->go);
    CHECK(waitpid(o->pid, &status, 0) == o->pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* ---- checks ------------------------------------------------------------------ */

static void
test_taken_after_sleeping_keeps_the_waiter_bit(void)
{
    test_ring a, b;
    waiter w;
    shm_error err;

    make_chan(&a, "bit");
    open_chan(&b, &a);
    CHECK(a.ch.sync.slot != b.ch.sync.slot);
    CHECK(sync_lock(&a.ch.sync, SYNC_LOCK_SEND, send_word(&a), in_seconds(5), &err) == SHM_OK);
    waiter_start(&w, &b, 60);
    (void)wait_asleep(&w);
    CHECK(at_load32(send_word(&a)) == (a.ch.sync.slot | SYNC_WAITERS));
    sync_unlock(&a.ch.sync, SYNC_LOCK_SEND, send_word(&a));    /* wakes it */
    waiter_join(&w);
    CHECK(w.status == SHM_OK);
    /* Taken after sleeping: the bit stays, another sleeper may be there. */
    CHECK(at_load32(send_word(&a)) == (b.ch.sync.slot | SYNC_WAITERS));
    sync_unlock(&b.ch.sync, SYNC_LOCK_SEND, send_word(&b));
    CHECK(at_load32(send_word(&a)) == 0);
    test_ring_close(&b);
    drop_chan(&a);
    printf("lock taken after sleeping keeps the waiter bit: ok\n");
}

static void
test_owner_changed_while_asleep(void)
{
    test_ring a, b;
    slot_owner dead, live;
    waiter w;
    uint32_t *word;
    int64_t end = in_seconds(60);
    int call, tries = 0, same_call = 0;

    make_chan(&a, "own");
    open_chan(&b, &a);
    word = send_word(&b);

    /* A new owner that is dead: the woken waiter probes it and takes the
       lock over in the call it slept in.  When that call's slice ended
       just before the change, the next call finds the dead owner in its
       first probe instead (also right, but not the path under test): the
       round is repeated. */
    owner_start(&dead, &a);
    owner_end(&dead);
    while (!same_call) {
        CHECK(sync_now_ns() < end && tries < 50);
        tries++;
        /* As when another thread of the waiter's own object holds the lock:
           no probe (that owner is alive), straight to sleep. */
        at_store32(word, b.ch.sync.slot);
        waiter_start(&w, &b, 60);
        call = wait_asleep(&w);
        CHECK(at_cas32(word, b.ch.sync.slot | SYNC_WAITERS, dead.slot | SYNC_WAITERS));
        futex_wake_all(word);
        waiter_join(&w);
        CHECK(w.status == SHM_OK);
        CHECK(at_load32(word) == (b.ch.sync.slot | SYNC_WAITERS));
        same_call = w.status_call == call;
        sync_unlock(&b.ch.sync, SYNC_LOCK_SEND, word);
    }

    /* A new owner that lives: woken, the waiter probes it, leaves it the
       lock and sleeps again, slice after slice; once the owner is gone it
       takes the lock over. */
    owner_start(&live, &a);
    at_store32(word, b.ch.sync.slot);
    waiter_start(&w, &b, 60);
    call = wait_asleep(&w);
    CHECK(at_cas32(word, b.ch.sync.slot | SYNC_WAITERS, live.slot | SYNC_WAITERS));
    futex_wake_all(word);
    while (at_loadi(&w.calls) < call + 2) {     /* two slices more, probing each */
        CHECK(!at_loadi(&w.done));
        CHECK(sync_now_ns() < end);
        pace();
    }
    CHECK(!at_loadi(&w.done));
    CHECK(OWNER(at_load32(word)) == live.slot);
    owner_end(&live);
    waiter_join(&w);
    CHECK(w.status == SHM_OK);
    CHECK(OWNER(at_load32(word)) == b.ch.sync.slot);
    sync_unlock(&b.ch.sync, SYNC_LOCK_SEND, word);

    test_ring_close(&b);
    drop_chan(&a);
    printf("owner changed while asleep: re-probed (%d round%s): ok\n", tries,
           tries == 1 ? "" : "s");
}

/* Shared memory is another process's to scribble on: a lock word garbled
   while a waiter sleeps on it is SHM_ECORRUPT for the woken waiter, in the
   call it slept in (repeated when a slice ended first, as above). */
static void
test_garbled_while_asleep(void)
{
    test_ring a, b;
    waiter w;
    uint32_t *word;
    int64_t end = in_seconds(60);
    int call, tries = 0, same_call = 0;

    make_chan(&a, "gar");
    open_chan(&b, &a);
    word = send_word(&b);
    while (!same_call) {
        CHECK(sync_now_ns() < end && tries < 50);
        tries++;
        at_store32(word, b.ch.sync.slot);
        waiter_start(&w, &b, 60);
        call = wait_asleep(&w);
        /* No liveness slot is that large. */
        CHECK(at_cas32(word, b.ch.sync.slot | SYNC_WAITERS, 0x7fffffffu));
        futex_wake_all(word);
        waiter_join(&w);
        CHECK(w.status == SHM_ECORRUPT);
        same_call = w.status_call == call;
    }
    at_store32(word, 0);
    test_ring_close(&b);
    drop_chan(&a);
    printf("lock word garbled while asleep: corrupt (%d round%s): ok\n", tries,
           tries == 1 ? "" : "s");
}

static void
on_signal(int sig)
{
    (void)sig;
}

static void
test_signal_and_timeout_end_the_lock_wait(void)
{
    test_ring a, b;
    waiter w;
    shm_error err;
    struct sigaction sa, old;
    shm_status st;
    int64_t end = in_seconds(60), deadline;
    int call, tries = 0, interrupted = 0;

    make_chan(&a, "sig");
    open_chan(&b, &a);
    /* No SA_RESTART: the wait is to end, as CPython's handlers make it. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGUSR1, &sa, &old) == 0);
    CHECK(sync_lock(&a.ch.sync, SYNC_LOCK_SEND, send_word(&a), in_seconds(5), &err) == SHM_OK);

    /* A signal while it sleeps: that call returns SHM_EINTR "interrupted"
       (a slice that ended first says "lock wait slice": tried again). */
    while (!interrupted) {
        CHECK(sync_now_ns() < end && tries < 50);
        tries++;
        waiter_start(&w, &b, 60);
        call = wait_asleep(&w);
        CHECK(pthread_kill(w.thread, SIGUSR1) == 0);
        while (at_loadi(&w.calls) == call) {    /* that call has returned */
            CHECK(sync_now_ns() < end);
            pace();
        }
        interrupted = at_loadi(&w.interrupted_call) == call;
        /* The waiter is back in its loop, as the ring would be after
           checking for signals: let it have the lock and give it back. */
        sync_unlock(&a.ch.sync, SYNC_LOCK_SEND, send_word(&a));
        waiter_join(&w);
        CHECK(w.status == SHM_OK);
        sync_unlock(&b.ch.sync, SYNC_LOCK_SEND, send_word(&b));
        CHECK(sync_lock(&a.ch.sync, SYNC_LOCK_SEND, send_word(&a), in_seconds(5), &err)
              == SHM_OK);
    }

    /* Held past the deadline: FUTEX_WAIT times out in the last slice, and
       the call says so (the slices before end with SHM_EINTR). */
    deadline = in_seconds(0.2);
    do {
        st = sync_lock(&b.ch.sync, SYNC_LOCK_SEND, send_word(&b), deadline, &err);
    } while (st == SHM_EINTR);
    CHECK(st == SHM_ETIMEOUT);
    CHECK(OWNER(at_load32(send_word(&b))) == a.ch.sync.slot);
    sync_unlock(&a.ch.sync, SYNC_LOCK_SEND, send_word(&a));
    CHECK(at_load32(send_word(&a)) == 0);

    CHECK(sigaction(SIGUSR1, &old, NULL) == 0);
    test_ring_close(&b);
    drop_chan(&a);
    printf("a signal and a deadline end the lock wait (%d round%s): ok\n", tries,
           tries == 1 ? "" : "s");
}

int
main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("sync_linux_test: wait scheme %s\n", sync_kind_name());
    test_taken_after_sleeping_keeps_the_waiter_bit();
    test_owner_changed_while_asleep();
    test_garbled_while_asleep();
    test_signal_and_timeout_end_the_lock_wait();
    printf("all passed\n");
    return 0;
}
