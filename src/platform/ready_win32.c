/*
 * platform/ready_win32.c -- readiness on Windows: the sync waits'
 * registration (the waiter count and the side's semaphore; a lock's
 * waiter bit and event) waited for by the system thread pool; waits on
 * many words with WaitForMultipleObjects.
 *
 * Owns: sync_ready on Windows, sync_wait_many.
 * May include: the C library, <winsock2.h> and <windows.h>,
 * platform/ready.h, core/atomics.h.  No Python.h.
 *
 * Arming a wait word registers in its waiter count, as sync_wait() does,
 * and asks the thread pool to wait on the side's semaphore
 * (RegisterWaitForSingleObject, once): the sender that takes the count
 * releases a unit, the pool's wait consumes it and runs our callback,
 * which sets the object's event (the wait handle: manual-reset) and sends
 * a byte on its socket (a connected UDP pair on 127.0.0.1, for select():
 * the SelectorEventLoop waits on sockets only).  That is how the
 * ProactorEventLoop's own wait_for_handle waits, and one pool thread
 * serves up to 63 waits: no thread per object.  Disarming unregisters the
 * wait (UnregisterWaitEx, waiting for a callback in flight) and, if the
 * callback did not run, takes the registration back as sync_wait() does;
 * if a sender took the count meanwhile, its unit stays in the semaphore
 * and wakes some later waiter once (the sync waits' own rule).  A process
 * killed while armed leaves a count that the next sender takes (one unit,
 * one spurious return, as a dead sync waiter).  A lock is armed as
 * sync_lock() sleeps: the waiter bit in its word, then the lock's
 * auto-reset event; the release sets it for one sleeper, which take()
 * passes on.  Nothing changes for senders.
 *
 * sync_wait_many: up to MAXIMUM_WAIT_OBJECTS words with one
 * WaitForMultipleObjects on their semaphores; more, in groups of 63 by the
 * thread pool (the same callbacks, all setting one event of the call).
 * Either way in slices, so that the binding can look for Ctrl-C.
 */
#include "platform/ready.h"

#include <winsock2.h>   /* the UDP pair: socket, bind, connect, send, recv */
#include <windows.h>    /* RegisterWaitForSingleObject, events */
#include <stdlib.h>     /* calloc, free */

#include "core/atomics.h"   /* the waiter counts and lock words */

#define MANY_SLICE_MS 50    /* sync_win32.c's slice */

struct sync_ready;

typedef struct {
    struct sync_ready *r;
    unsigned n;
    int armed;
    HANDLE wait;                /* the pool's wait; NULL none */
    volatile LONG served;       /* its callback ran (a unit or the event consumed) */
    sync_watch w;
} win_watch;

struct sync_ready {
    HANDLE event;               /* manual-reset: the wait handle */
    SOCKET rsock, wsock;        /* rsock becomes readable; the callback sends on wsock */
    win_watch watch[SYNC_READY_WATCHES];
    volatile LONG fired;        /* watches whose callback ran, not yet taken */
    int wsa;                    /* WSAStartup succeeded */
};

/* A lock's release or a semaphore unit came: the arm of watch CTX is over. */
static VOID CALLBACK
on_ready(PVOID ctx, BOOLEAN timed_out)
{
    win_watch *x = (win_watch *)ctx;
    struct sync_ready *r = x->r;
    static const char one = 1;

    (void)timed_out;        /* INFINITE: never */
    InterlockedExchange(&x->served, 1);
    InterlockedOr(&r->fired, (LONG)(1u << x->n));
    (void)SetEvent(r->event);
    if (r->wsock != INVALID_SOCKET)
        (void)send(r->wsock, &one, 1, 0);   /* a full buffer is readable already */
}

static shm_status
wsa_failed(shm_error *err, const char *call)
{
    return shm_fail_os(err, call, WSAGetLastError());
}

/* A connected pair of non-blocking, non-inheritable UDP sockets on the
   loopback: datagrams come only from the peer. */
static shm_status
open_pair(struct sync_ready *r, shm_error *err)
{
    struct sockaddr_in a, b;
    int len;
    u_long nonblocking = 1;

    r->rsock = WSASocketW(AF_INET, SOCK_DGRAM, IPPROTO_UDP, NULL, 0, WSA_FLAG_NO_HANDLE_INHERIT);
    if (r->rsock == INVALID_SOCKET)
        return wsa_failed(err, "WSASocketW");
    r->wsock = WSASocketW(AF_INET, SOCK_DGRAM, IPPROTO_UDP, NULL, 0, WSA_FLAG_NO_HANDLE_INHERIT);
    if (r->wsock == INVALID_SOCKET)
        return wsa_failed(err, "WSASocketW");
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    b = a;
    if (bind(r->rsock, (struct sockaddr *)&a, sizeof a) != 0 ||
        bind(r->wsock, (struct sockaddr *)&b, sizeof b) != 0)
        return wsa_failed(err, "bind");
    len = sizeof a;
    if (getsockname(r->rsock, (struct sockaddr *)&a, &len) != 0)
        return wsa_failed(err, "getsockname");
    len = sizeof b;
    if (getsockname(r->wsock, (struct sockaddr *)&b, &len) != 0)
        return wsa_failed(err, "getsockname");
    if (connect(r->rsock, (struct sockaddr *)&b, sizeof b) != 0 ||
        connect(r->wsock, (struct sockaddr *)&a, sizeof a) != 0)
        return wsa_failed(err, "connect");
    if (ioctlsocket(r->rsock, FIONBIO, &nonblocking) != 0 ||
        ioctlsocket(r->wsock, FIONBIO, &nonblocking) != 0)
        return wsa_failed(err, "ioctlsocket");
    return SHM_OK;
}

static void
free_ready(struct sync_ready *r)
{
    if (r->rsock != INVALID_SOCKET)
        (void)closesocket(r->rsock);
    if (r->wsock != INVALID_SOCKET)
        (void)closesocket(r->wsock);
    if (r->event != NULL)
        (void)CloseHandle(r->event);
    if (r->wsa)
        (void)WSACleanup();
    free(r);
}

shm_status
sync_ready_open(sync_ready **out, shm_error *err)
{
    struct sync_ready *r = calloc(1, sizeof *r);
    WSADATA data;
    shm_status status;
    unsigned i;
    int rc;

    if (r == NULL)
        return shm_fail_os(err, "calloc", ERROR_NOT_ENOUGH_MEMORY);
    r->rsock = r->wsock = INVALID_SOCKET;
    for (i = 0; i < SYNC_READY_WATCHES; i++) {
        r->watch[i].r = r;
        r->watch[i].n = i;
    }
    rc = WSAStartup(MAKEWORD(2, 2), &data);     /* counted: WSACleanup in free_ready */
    if (rc != 0) {
        free_ready(r);
        return shm_fail_os(err, "WSAStartup", rc);
    }
    r->wsa = 1;
    /* Non-inheritable (NULL attributes), unnamed: nobody else sets it. */
    r->event = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (r->event == NULL) {
        status = shm_fail_os(err, "CreateEventW", (int)GetLastError());
        free_ready(r);
        return status;
    }
    status = open_pair(r, err);
    if (status != SHM_OK) {
        free_ready(r);
        return status;
    }
    *out = r;
    return SHM_OK;
}

/* The pool's wait of X is over or was never made: release it, waiting for
   a callback in flight (never called from a callback). */
static void
unregister_wait(win_watch *x)
{
    if (x->wait != NULL)
        (void)UnregisterWaitEx(x->wait, INVALID_HANDLE_VALUE);
    x->wait = NULL;
}

/* sync_win32.c's rule: take a registration back unless a waker took the
   count already. */
static void
unregister_count(uint32_t *count)
{
    uint32_t c = at_load32(count);

    while (c > 0 && !at_cas32_val(count, &c, c - 1))
        ;
}

void
sync_ready_disarm(sync_ready *r, unsigned n)
{
    win_watch *x = &r->watch[n];

    if (!x->armed)
        return;
    unregister_wait(x);
    if (!x->served && !x->w.lock)
        unregister_count(x->w.count);
    x->armed = 0;
    InterlockedAnd(&r->fired, (LONG)~(1u << n));
}

void
sync_ready_close(sync_ready *r)
{
    unsigned n;

    if (r == NULL)
        return;
    for (n = 0; n < SYNC_READY_WATCHES; n++)
        sync_ready_disarm(r, n);
    free_ready(r);
}

void
sync_ready_forget(sync_ready *r)
{
    sync_ready_close(r);    /* no fork on Windows */
}

intptr_t
sync_ready_fd(const sync_ready *r)
{
    return (intptr_t)r->rsock;
}

intptr_t
sync_ready_handle(const sync_ready *r)
{
    return (intptr_t)r->event;
}

const char *
sync_ready_engine(const sync_ready *r)
{
    (void)r;
    return "threadpool";
}

uint32_t
sync_watch_register(const sync_watch *w, int *free_lock)
{
    uint32_t v;

    *free_lock = 0;
    if (!w->lock) {
        (void)at_add32_sc(w->count, 1);
        return 0;
    }
    v = at_load32_sc(w->word);
    for (;;) {
        if (v == 0) {
            *free_lock = 1;
            return 0;
        }
        if ((v & SYNC_WAITERS) || at_cas32_val(w->word, &v, v | SYNC_WAITERS))
            return v | SYNC_WAITERS;
    }
}

shm_status
sync_ready_arm(sync_ready *r, unsigned n, const sync_watch *w, int *now, shm_error *err)
{
    win_watch *x = &r->watch[n];
    HANDLE target;
    int free_lock;
    DWORD code;

    *now = 0;
    if (x->armed)
        return SHM_OK;
    (void)sync_watch_register(w, &free_lock);
    if (free_lock) {
        *now = 1;
        return SHM_OK;
    }
    target = (HANDLE)(w->lock ? w->h->lock[w->id] : w->h->sem[w->id]);
    x->w = *w;
    x->served = 0;
    if (!RegisterWaitForSingleObject(&x->wait, target, on_ready, x, INFINITE,
                                     WT_EXECUTEONLYONCE)) {
        code = GetLastError();
        x->wait = NULL;
        if (!w->lock)
            unregister_count(w->count);
        return shm_fail_os(err, "RegisterWaitForSingleObject", (int)code);
    }
    x->armed = 1;
    return SHM_OK;
}

unsigned
sync_ready_take(sync_ready *r)
{
    unsigned fired, n;
    char buf[64];
    win_watch *x;

    /* Reset first: a callback after this sets it again. */
    (void)ResetEvent(r->event);
    while (recv(r->rsock, buf, sizeof buf, 0) > 0)
        ;
    fired = (unsigned)InterlockedExchange(&r->fired, 0);
    for (n = 0; n < SYNC_READY_WATCHES; n++) {
        x = &r->watch[n];
        if (!(fired & (1u << n)) || !x->armed)
            continue;
        unregister_wait(x);     /* it ran: this only frees it */
        x->armed = 0;
        /* The lock's release set its auto-reset event for one sleeper,
           and our wait consumed it: set it again for the others. */
        if (x->w.lock)
            (void)SetEvent((HANDLE)x->w.h->lock[x->w.id]);
    }
    return fired;
}

void
sync_ready_wake(sync_ready *r)
{
    static const char one = 1;

    (void)SetEvent(r->event);
    (void)send(r->wsock, &one, 1, 0);
}

/* ---- many words at once ------------------------------------------------------------ */

typedef struct {
    HANDLE wait;
    HANDLE event;               /* the call's event */
    volatile LONG served;
} many_ctx;

static VOID CALLBACK
on_many(PVOID ctx, BOOLEAN timed_out)
{
    many_ctx *c = (many_ctx *)ctx;

    (void)timed_out;
    InterlockedExchange(&c->served, 1);
    (void)SetEvent(c->event);
}

/* Milliseconds of this slice before UNTIL (SYNC_FOREVER: a whole slice). */
static DWORD
slice_of(int64_t until)
{
    int64_t now = sync_now_ns(), ms;

    if (until == SYNC_FOREVER)
        return MANY_SLICE_MS;
    ms = until <= now ? 0 : (until - now + 999999) / 1000000;
    return (DWORD)(ms < MANY_SLICE_MS ? ms : MANY_SLICE_MS);
}

/* Register in every count, then: has any word moved from SEEN? */
static int
register_all(const sync_watch *w, const uint32_t *seen, size_t n)
{
    size_t i;
    int moved = 0;

    for (i = 0; i < n; i++)
        (void)at_add32_sc(w[i].count, 1);
    for (i = 0; i < n; i++)
        if ((at_load32_sc(w[i].word) ^ seen[i]) & SYNC_SEQ_MASK)
            moved = 1;
    return moved;
}

shm_status
sync_wait_many(const sync_watch *w, const uint32_t *seen, size_t n, int64_t until,
               shm_error *err)
{
    HANDLE handles[MAXIMUM_WAIT_OBJECTS];
    many_ctx *ctx;
    HANDLE event;
    DWORD rc, ms, code;
    size_t i, served = (size_t)-1;
    shm_status status = SHM_OK;

    ms = slice_of(until);
    if (ms == 0)
        return shm_fail(err, SHM_ETIMEOUT, "timed out");
    if (n <= MAXIMUM_WAIT_OBJECTS) {
        for (i = 0; i < n; i++)
            handles[i] = (HANDLE)w[i].h->sem[w[i].id];
        if (!register_all(w, seen, n)) {
            rc = WaitForMultipleObjects((DWORD)n, handles, FALSE, ms);
            if (rc < WAIT_OBJECT_0 + n)
                served = rc - WAIT_OBJECT_0;    /* only that one's unit was taken */
            else if (rc == WAIT_TIMEOUT)
                status = shm_fail(err, SHM_ETIMEOUT, "timed out");
            else
                status = shm_fail_os(err, "WaitForMultipleObjects", (int)GetLastError());
        }
        for (i = 0; i < n; i++)
            if (i != served)
                unregister_count(w[i].count);
        return status;
    }
    /* More than one call can wait on: the pool waits, in groups of 63. */
    ctx = calloc(n, sizeof *ctx);
    if (ctx == NULL)
        return shm_fail_os(err, "calloc", ERROR_NOT_ENOUGH_MEMORY);
    event = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (event == NULL) {
        code = GetLastError();
        free(ctx);
        return shm_fail_os(err, "CreateEventW", (int)code);
    }
    if (!register_all(w, seen, n)) {
        for (i = 0; i < n && status == SHM_OK; i++) {
            ctx[i].event = event;
            if (!RegisterWaitForSingleObject(&ctx[i].wait, (HANDLE)w[i].h->sem[w[i].id],
                                             on_many, &ctx[i], INFINITE, WT_EXECUTEONLYONCE)) {
                ctx[i].wait = NULL;
                status = shm_fail_os(err, "RegisterWaitForSingleObject", (int)GetLastError());
            }
        }
        if (status == SHM_OK) {
            rc = WaitForSingleObject(event, ms);
            if (rc == WAIT_TIMEOUT)
                status = shm_fail(err, SHM_ETIMEOUT, "timed out");
            else if (rc != WAIT_OBJECT_0)
                status = shm_fail_os(err, "WaitForSingleObject", (int)GetLastError());
        }
    }
    for (i = 0; i < n; i++) {
        if (ctx[i].wait != NULL)
            (void)UnregisterWaitEx(ctx[i].wait, INVALID_HANDLE_VALUE);
        if (!ctx[i].served)
            unregister_count(w[i].count);
    }
    (void)CloseHandle(event);
    free(ctx);
    return status;
}
