/*
 * platform/sync_win32.c -- all of platform/sync.h on Windows.
 *
 * Owns: the clock, the CPU hints, the handles, the locks and the waits on
 * Windows.
 * May include: the C library, <windows.h>, platform/sync.h.  No Python.h.
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
 * Waits: the shared sequence word is re-checked before blocking, and the
 * waker releases one semaphore unit per registered waiter.  A unit released
 * for a waiter that then did not block stays in the semaphore and causes one
 * spurious return later (the caller re-checks).  Windows delivers Ctrl-C on
 * another thread, not as an interruption of this wait, so every wait is cut
 * into slices: at the end of one the caller gets SHM_EINTR, takes the GIL
 * and runs PyErr_CheckSignals().
 */
#include "platform/sync.h"

#include <windows.h>    /* CreateMutexW, CreateSemaphoreW, WaitForSingleObject */
#include <wchar.h>      /* wcslen, wmemcpy */

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

    for (i = 0; i < SYNC_NLOCKS; i++)
        h->lock[i] = 0;
    for (i = 0; i < SYNC_NWORDS; i++)
        h->sem[i] = 0;
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
sync_handles_open(sync_handles *h, const shm_char *name, shm_error *err)
{
    wchar_t full[SHM_NAME_MAX + 8];
    size_t len = wcslen(name);
    int i;

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

shm_status
sync_locks_format(void *area[SYNC_NLOCKS], shm_error *err)
{
    /* The locks are named objects; the header areas stay unused (zero). */
    (void)area;
    (void)err;
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
sync_trylock(sync_handles *h, sync_lock_id lock_id, void *area, shm_error *err)
{
    (void)area;
    return lock_result(WaitForSingleObject((HANDLE)h->lock[lock_id], 0), 1, err);
}

shm_status
sync_lock(sync_handles *h, sync_lock_id lock_id, void *area, int64_t deadline,
          shm_error *err)
{
    HANDLE m = (HANDLE)h->lock[lock_id];
    DWORD rc, ms;
    int i, last;

    (void)area;
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
sync_unlock(sync_handles *h, sync_lock_id lock_id, void *area)
{
    (void)area;
    (void)ReleaseMutex((HANDLE)h->lock[lock_id]);
}

shm_status
sync_wait(sync_handles *h, sync_word_id word_id, uint32_t *word, uint32_t expected,
          int64_t deadline, shm_error *err)
{
    DWORD rc, ms;
    int last;

    if (*(volatile uint32_t *)word != expected)
        return SHM_OK;
    ms = slice_ms(deadline, &last);
    if (ms == 0)
        return shm_fail(err, SHM_ETIMEOUT, "timed out");
    rc = WaitForSingleObject((HANDLE)h->sem[word_id], ms);
    switch (rc) {
    case WAIT_OBJECT_0:
        return SHM_OK;
    case WAIT_TIMEOUT:
        /* The caller re-checks the word and its deadline, and the binding
           gets a chance to see Ctrl-C. */
        if (last)
            return SHM_OK;
        return shm_fail(err, SHM_EINTR, "wait slice");
    default:
        return shm_fail_os(err, "WaitForSingleObject", (int)GetLastError());
    }
}

void
sync_wake(sync_handles *h, sync_word_id word_id, uint32_t *word, uint32_t waiters)
{
    (void)word;
    if (waiters > WAKE_MAX)
        waiters = WAKE_MAX;
    /* Fails (ERROR_TOO_MANY_POSTS) only when the surplus is already huge. */
    (void)ReleaseSemaphore((HANDLE)h->sem[word_id], (LONG)waiters, NULL);
}
