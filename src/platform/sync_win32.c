/*
 * platform/sync_win32.c -- all of platform/sync.h on Windows.
 *
 * Owns: the clock, the CPU hints, the handles, the locks and the waits on
 * Windows, sync_users (it cannot tell).
 * May include: the C library, <windows.h>, platform/sync.h, core/atomics.h.
 * No Python.h.
 *
 * Channel waits and locks are named kernel objects derived from the
 * channel's name (NAME + a 4-character suffix, so a "Local\" or "Global\"
 * prefix keeps its meaning):
 *
 *   NAME#chS  mutex      send lock        SYNC_LOCK_SEND
 *   NAME#chR  mutex      recv lock        SYNC_LOCK_RECV
 *   NAME#chD  semaphore  "data arrived"   SYNC_WORD_DATA  (receivers wait on it)
 *   NAME#chF  semaphore  "space freed"    SYNC_WORD_SPACE (senders wait on it)
 *
 * Create-or-open: whoever attaches first creates them; like the mapping
 * they die with their last handle, so there is nothing to unlink.
 *
 * Locks: a mutex whose owner dies is "abandoned": the next wait returns
 * WAIT_ABANDONED and owns it (WaitForSingleObject docs).  The channel
 * protocol leaves nothing to repair, so that counts as taken.
 *
 * Nothing in the segment is read by the locks (the header's lock words stay
 * zero here); the waits read the sequence words (only compared) and the
 * waiter counts, whose every value is safe (see below).
 *
 * Waits: a waiter registers in the side's waiter count, re-checks the
 * shared sequence word, and blocks on the semaphore.  The waker moves the
 * sequence on, takes the whole count (exchange to 0) and releases that
 * many units (at most WAKE_MAX): each registration is served once, by the
 * first bump after it.  A waiter that stops waiting (slice over) takes its
 * registration back if no waker took it yet; if one did, its unit stays in
 * the semaphore and causes one spurious return later (the caller
 * re-checks).  So a waiter killed while blocked costs one unit and one
 * spurious return at most, never a release on every later bump, and a
 * garbage count costs one release of WAKE_MAX units.  Windows delivers
 * Ctrl-C on another thread, not as an interruption of this wait, so every
 * wait is cut into slices: at the end of one the caller gets SHM_EINTR,
 * takes the GIL and runs PyErr_CheckSignals().
 */
#include "platform/sync.h"

#include <windows.h>    /* CreateMutexW, CreateSemaphoreW, WaitForSingleObject */
#include <wchar.h>      /* wcslen, wmemcpy */

#include "core/atomics.h"   /* the sequence and waiter-count words */

#define SLICE_MS 50             /* longest wait before the caller checks signals */
#define SEM_MAX 0x100000L       /* surplus units beyond this are dropped */
#define WAKE_MAX 64u            /* units released per wake at most */
#define LOCK_TRIES 64           /* tries on a busy lock before blocking */

/* The suffixes of the table above, by id: every process derives the same
   names, so they are part of the cross-process format and never change. */
static const wchar_t *const lock_suffix[SYNC_NLOCKS] = {
    [SYNC_LOCK_SEND] = L"#chS",
    [SYNC_LOCK_RECV] = L"#chR",
};
static const wchar_t *const sem_suffix[SYNC_NWORDS] = {
    [SYNC_WORD_DATA] = L"#chD",
    [SYNC_WORD_SPACE] = L"#chF",
};

uint32_t
sync_kind(void)
{
    return SYNC_KIND_WIN32;
}

const char *
sync_kind_name(void)
{
    return "win32";
}

uint32_t
sync_domain(void)
{
    /* Named kernel objects: no owner id in shared memory to interpret. */
    return 0;
}

int64_t
sync_now_ns(void)
{
    LARGE_INTEGER count, freq;

    QueryPerformanceCounter(&count);
    QueryPerformanceFrequency(&freq);
    return (int64_t)((double)count.QuadPart * ((double)SYNC_NS_PER_S / (double)freq.QuadPart));
}

void
sync_cpu_relax(void)
{
    YieldProcessor();
}

void
sync_yield(void)
{
    (void)SwitchToThread();
}

uint32_t
sync_cpu(void)
{
    /* "GetCurrentProcessorNumber": the processor within the current group. */
    return (uint32_t)GetCurrentProcessorNumber() + 1u;
}

uint32_t
sync_process_id(void)
{
    return (uint32_t)GetCurrentProcessId();
}

int
sync_ncpu(void)
{
    SYSTEM_INFO info;

    GetSystemInfo(&info);
    return info.dwNumberOfProcessors > 0 ? (int)info.dwNumberOfProcessors : 1;
}

void
sync_handles_init(sync_handles *h)
{
    int i;

    for (i = 0; i < SYNC_NLOCKS; i++) {
        h->lock[i] = 0;
        h->words[i] = NULL;
    }
    for (i = 0; i < SYNC_NWORDS; i++)
        h->sem[i] = 0;
    h->fd = -1;         /* the POSIX fields stay unused here */
    h->slot = 0;
    h->probing = 0;
    h->next = h->prev = NULL;
}

void
sync_handles_close(sync_handles *h)
{
    int i;

    for (i = 0; i < SYNC_NLOCKS; i++) {
        if (h->lock[i] != 0)
            (void)CloseHandle((HANDLE)h->lock[i]);
        h->lock[i] = 0;
    }
    for (i = 0; i < SYNC_NWORDS; i++) {
        if (h->sem[i] != 0)
            (void)CloseHandle((HANDLE)h->sem[i]);
        h->sem[i] = 0;
    }
}

shm_status
sync_users(intptr_t fd, long *users, shm_error *err)
{
    /* Named mutexes and semaphores do not say how many hold them open. */
    (void)fd;
    (void)err;
    *users = -1;
    return SHM_OK;
}

/* A create failed: report CALL with the last error (read first, before
   any close can overwrite it), and close what was opened so far. */
static shm_status
open_failed(sync_handles *h, const char *call, shm_error *err)
{
    shm_status status = shm_fail_os(err, call, (int)GetLastError());

    sync_handles_close(h);
    return status;
}

shm_status
sync_handles_open(sync_handles *h, const shm_char *name, intptr_t *fd,
                  uint32_t *words[SYNC_NLOCKS], shm_error *err)
{
    wchar_t full[SHM_NAME_MAX + 8];
    size_t len = wcslen(name);
    int i;

    (void)fd;       /* the segment keeps its mapping handle */
    (void)words;    /* the locks are named mutexes */
    if (len > SHM_NAME_MAX)
        return shm_fail(err, SHM_EVALUE, "name is too long");
    wmemcpy(full, name, len);
    for (i = 0; i < SYNC_NLOCKS; i++) {
        wmemcpy(full + len, lock_suffix[i], 5);     /* with its NUL */
        h->lock[i] = (intptr_t)CreateMutexW(NULL, FALSE, full);
        if (h->lock[i] == 0)
            return open_failed(h, "CreateMutexW", err);
    }
    for (i = 0; i < SYNC_NWORDS; i++) {
        wmemcpy(full + len, sem_suffix[i], 5);
        h->sem[i] = (intptr_t)CreateSemaphoreW(NULL, 0, SEM_MAX, full);
        if (h->sem[i] == 0)
            return open_failed(h, "CreateSemaphoreW", err);
    }
    return SHM_OK;
}

/* Milliseconds to wait for this slice, and whether it reaches DEADLINE. */
static DWORD
slice_ms(int64_t deadline, int *last)
{
    int64_t now = sync_now_ns(), ms;

    if (deadline == SYNC_FOREVER) {
        *last = 0;
        return SLICE_MS;
    }
    ms = deadline <= now ? 0 : (deadline - now + 999999) / 1000000;
    *last = ms <= SLICE_MS;
    return (DWORD)(ms <= SLICE_MS ? ms : SLICE_MS);
}

static shm_status
lock_result(DWORD rc, int last, shm_error *err)
{
    switch (rc) {
    case WAIT_OBJECT_0:
    case WAIT_ABANDONED:    /* the previous owner died holding it: now ours */
        return SHM_OK;
    case WAIT_TIMEOUT:
        if (last)
            return shm_fail(err, SHM_ETIMEOUT,
                            "the channel lock stayed busy until the timeout");
        return shm_fail(err, SHM_EINTR, "lock wait slice");
    default:
        return shm_fail_os(err, "WaitForSingleObject", (int)GetLastError());
    }
}

shm_status
sync_trylock(sync_handles *h, sync_lock_id lock_id, uint32_t *word, shm_error *err)
{
    (void)word;
    return lock_result(WaitForSingleObject((HANDLE)h->lock[lock_id], 0), 1, err);
}

shm_status
sync_lock(sync_handles *h, sync_lock_id lock_id, uint32_t *word, int64_t deadline,
          shm_error *err)
{
    HANDLE m = (HANDLE)h->lock[lock_id];
    DWORD rc, ms;
    int i, last;

    (void)word;
    for (i = 0; i < LOCK_TRIES; i++) {
        rc = WaitForSingleObject(m, 0);
        if (rc != WAIT_TIMEOUT)
            return lock_result(rc, 1, err);
        YieldProcessor();
    }
    ms = slice_ms(deadline, &last);
    return lock_result(WaitForSingleObject(m, ms), last, err);
}

void
sync_unlock(sync_handles *h, sync_lock_id lock_id, uint32_t *word)
{
    (void)word;
    (void)ReleaseMutex((HANDLE)h->lock[lock_id]);
}

/* A waiter that stops waiting takes its registration back, unless a waker
   took the count already (then its unit is on the way: one spurious
   return for some later waiter). */
static void
unregister(uint32_t *count)
{
    uint32_t c = at_load32(count);

    while (c > 0 && !at_cas32_val(count, &c, c - 1))
        ;
}

shm_status
sync_wait(sync_handles *h, sync_word_id word_id, uint32_t *word, uint32_t *count,
          uint32_t seq, int64_t until, shm_error *err)
{
    DWORD rc, ms;
    int last;

    if ((at_load32(word) ^ seq) & SYNC_SEQ_MASK)
        return SHM_OK;
    ms = slice_ms(until, &last);
    if (ms == 0)
        return shm_fail(err, SHM_ETIMEOUT, "timed out");
    /* Register, then look once more: the waker moves the sequence before
       it takes the count (both sequentially consistent), so either it
       takes our registration or we see its move -- never neither. */
    (void)at_add32_sc(count, 1);
    if ((at_load32_sc(word) ^ seq) & SYNC_SEQ_MASK) {
        unregister(count);
        return SHM_OK;
    }
    rc = WaitForSingleObject((HANDLE)h->sem[word_id], ms);
    switch (rc) {
    case WAIT_OBJECT_0:
        return SHM_OK;      /* a waker served our registration */
    case WAIT_TIMEOUT:
        unregister(count);
        /* The caller compares with its deadline; before it, the binding
           gets a chance to see Ctrl-C. */
        return shm_fail(err, SHM_ETIMEOUT, "timed out");
    default:
        {
            shm_status status = shm_fail_os(err, "WaitForSingleObject", (int)GetLastError());
            unregister(count);
            return status;
        }
    }
}

void
sync_bump(sync_handles *h, sync_word_id word_id, uint32_t *word, uint32_t *count)
{
    uint32_t v = at_load32_relaxed(word), n;

    while (!at_cas32_val(word, &v, (v + 1u) & SYNC_SEQ_MASK))
        ;
    n = at_xchg32(count, 0);
    if (n == 0)
        return;
    if (n > WAKE_MAX)
        n = WAKE_MAX;   /* a garbage count: one bounded release */
    /* Fails (ERROR_TOO_MANY_POSTS) only when the surplus is already huge. */
    (void)ReleaseSemaphore((HANDLE)h->sem[word_id], (LONG)n, NULL);
}
