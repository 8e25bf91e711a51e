/*
 * platform/sync_win32.c -- all of platform/sync.h on Windows.
 *
 * Owns: the clock, the CPU hints, the handles, the liveness slots, the
 * locks and the waits on Windows, sync_users (it does not count).
 * May include: the C library, <windows.h>, platform/sync.h, core/atomics.h.
 * No Python.h.
 *
 * An object's waits and locks use named kernel objects derived from its
 * name (NAME + a suffix, so a "Local\" or "Global\" prefix keeps its
 * meaning):
 *
 *   NAME#lkS       auto-reset event  wakes a sleeper on the send lock  SYNC_LOCK_SEND
 *   NAME#lkR       auto-reset event  wakes a sleeper on the recv lock  SYNC_LOCK_RECV
 *   NAME#chD       semaphore         "data arrived"   SYNC_WORD_DATA  (receivers wait on it)
 *   NAME#chF       semaphore         "space freed"    SYNC_WORD_SPACE (senders wait on it)
 *   NAME#lvXXXXX   event, never set  liveness slot 0xXXXXX (5 hex digits, 1..SYNC_SLOT_MAX)
 *
 * Create-or-open: whoever attaches first creates the events and semaphores;
 * like the mapping they die with their last handle, so there is nothing to
 * unlink.  Every handle is created non-inheritable (NULL security
 * attributes), so a child process never keeps a name of ours alive.  The
 * names are part of the cross-process format and never change.  (Until
 * SYNC_KIND_WIN32_MUTEX was retired, NAME#chS and NAME#chR were the locks
 * themselves, as named mutexes; those channels are refused at attach.)
 *
 * Liveness slots.  A mutex belongs to a thread (only that thread may release
 * it), but a lock here belongs to an attached object: a zero-copy loan holds
 * its side's lock across Python code and may be ended by another thread.
 * So, as on Linux (sync_linux.c), a lock is a word naming its holder's
 * liveness slot, and what Windows maintains for us is the slot's liveness:
 * slot N is held while a kernel object named NAME#lvN exists.  The kernel
 * deletes a name with its last handle, so the name vanishes when its object
 * is closed or its process dies, however it dies (TerminateProcess too).
 * No pid or thread id is stored or trusted.
 *
 *   - Claiming (attach): CreateEventW of NAME#lvN until one call creates
 *     its name rather than opening an existing one (ERROR_ALREADY_EXISTS:
 *     close it, try another N; a name held by an object of another type or
 *     one we may not open counts as taken too).  The name did not exist, so
 *     the slot's previous holder is gone: a lock word still naming N is an
 *     orphan that no one could take over (its name is ours now) and is
 *     cleared at once, waking its sleepers.
 *   - A waiter that finds a lock busy after its spin, once per slice, tries
 *     to claim the owner's name.  Opened an existing one: the owner lives
 *     (closed again at once).  Created it: the owner is gone, and while we
 *     hold its name no one can claim that slot, so a compare-and-swap of the
 *     word from that owner to us takes the lock over (exactly one waiter
 *     wins: the kernel lets only one creator make the name); then the name
 *     is closed.  Whatever the dead owner was doing is abandoned, which the
 *     protocol makes harmless (nothing to repair).
 *   - A word whose owner is outside 1..SYNC_SLOT_MAX is garbage:
 *     SHM_ECORRUPT (treating it as dead would hide the corruption).
 *   - Our own slot in a busy word means another thread of this object
 *     holds it: alive, never probed.
 *
 * Locks: one word per lock, 0 when free, else the owner's slot, plus
 * SYNC_WAITERS when someone may sleep on the lock's event.  Lock is a
 * compare-and-swap 0 -> slot (no system call), a short spin, then sleeps
 * on the event in slices: set SYNC_WAITERS in the word (a compare-and-swap
 * from the value seen, so a release in between is noticed), then wait.
 * Unlock swaps the word to 0 and, only when SYNC_WAITERS was set, sets the
 * event, which lets exactly one sleeper go (or the next one to wait, if none
 * sleeps yet: an event keeps its state, so no wake is lost between setting
 * the bit and sleeping).  A sleeper that takes the lock keeps the bit, for
 * the others.  A stale wake (its sleeper had left) costs one spurious
 * return at most: an event holds one signal, not a count.
 *
 * Nothing in the segment is trusted: lock words are checked as above; the
 * waits read the sequence words (only compared) and the waiter counts,
 * whose every value is safe (see below).
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
 * wait, lock waits included, is cut into slices: at the end of one the
 * caller gets SHM_EINTR (SHM_ETIMEOUT for data waits, which compare with
 * their deadline), takes the GIL and runs PyErr_CheckSignals().
 */
#include "platform/sync.h"

#include <windows.h>    /* CreateEventW, CreateSemaphoreW, WaitForSingleObject */
#include <wchar.h>      /* wcslen, wmemcpy */

#include "core/atomics.h"   /* the lock, sequence and waiter-count words */

#define SLICE_MS 50             /* longest wait before the caller checks signals */
#define SEM_MAX 0x100000L       /* surplus units beyond this are dropped */
#define WAKE_MAX 64u            /* units released per wake at most */
/* Spins on a busy lock before sleeping on it; holders only copy a message. */
#define LOCK_SPINS 2000
/* The longest suffix: "#lv" and 5 hex digits (SYNC_SLOT_MAX). */
#define SUFFIX_MAX 8

#define OWNER(v) ((v) & ~SYNC_WAITERS)

/* The suffixes of the table above, by id. */
static const wchar_t *const lock_suffix[SYNC_NLOCKS] = {
    [SYNC_LOCK_SEND] = L"#lkS",
    [SYNC_LOCK_RECV] = L"#lkR",
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
    /* Liveness slots are named after the segment, in its namespace ("Local\"
       or "Global\"): every process that can open the segment sees them. */
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
    h->live = 0;
    h->slot = 0;
    h->base[0] = L'\0';
    h->fd = -1;         /* the POSIX fields stay unused here */
    h->probing = 0;
    h->next = h->prev = NULL;
}

void
sync_handles_close(sync_handles *h)
{
    int i;

    /* The slot's name goes with this handle: a lock word still naming it
       (none, unless a holder never let go) becomes an orphan that the next
       waiter takes over. */
    if (h->live != 0)
        (void)CloseHandle((HANDLE)h->live);
    h->live = 0;
    h->slot = 0;
    for (i = 0; i < SYNC_NLOCKS; i++) {
        if (h->lock[i] != 0)
            (void)CloseHandle((HANDLE)h->lock[i]);
        h->lock[i] = 0;
        h->words[i] = NULL;
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
    /* Slots are named events: counting them would mean probing every slot
       name of the channel, and the name is not known here (only the
       mapping's handle).  `pyshm ls` cannot list names on Windows anyway. */
    (void)fd;
    (void)err;
    *users = -1;
    return SHM_OK;
}

/* FULL = the object's name followed by SUFFIX (with its NUL); FULL has room
   for SHM_NAME_MAX + SUFFIX_MAX + 1 characters, the name was checked. */
static void
derive(wchar_t *full, const wchar_t *base, const wchar_t *suffix)
{
    size_t len = wcslen(base), n = wcslen(suffix);

    wmemcpy(full, base, len);
    wmemcpy(full + len, suffix, n + 1);
}

/* ---- liveness slots ------------------------------------------------------- */

/* A slot number that is its own lock word's owner id: 1..SYNC_SLOT_MAX. */
static int
owner_valid(uint32_t v)
{
    return OWNER(v) >= 1 && OWNER(v) <= SYNC_SLOT_MAX;
}

typedef enum {
    NAME_CREATED,       /* the name did not exist: *OUT is its only handle */
    NAME_TAKEN,         /* someone holds it (or an object we cannot open) */
    NAME_FAILED,        /* another error: *CODE */
} name_result;

/* Try to create slot K's name for the object of H.  Never blocks. */
static name_result
create_slot_name(const sync_handles *h, uint32_t k, HANDLE *out, DWORD *code)
{
    static const wchar_t hex[] = L"0123456789abcdef";
    wchar_t full[SHM_NAME_MAX + SUFFIX_MAX + 1], suffix[SUFFIX_MAX + 1];
    HANDLE ev;
    DWORD rc;
    int i;

    suffix[0] = L'#';
    suffix[1] = L'l';
    suffix[2] = L'v';
    for (i = 0; i < 5; i++)
        suffix[3 + i] = hex[(k >> (16 - 4 * i)) & 0xfu];
    suffix[SUFFIX_MAX] = L'\0';
    derive(full, h->base, suffix);
    /* "If the named event object existed before the function call, the
       function returns a handle to the existing object and GetLastError
       returns ERROR_ALREADY_EXISTS" (CreateEventW): cleared first, so a
       stale code cannot pass for it. */
    SetLastError(ERROR_SUCCESS);
    ev = CreateEventW(NULL, TRUE, FALSE, full);
    rc = GetLastError();
    if (ev == NULL) {
        /* ERROR_INVALID_HANDLE: the name belongs to an object of another
           type; ERROR_ACCESS_DENIED: one we may not open.  Either way the
           name exists, held by someone. */
        if (rc == ERROR_INVALID_HANDLE || rc == ERROR_ACCESS_DENIED)
            return NAME_TAKEN;
        *code = rc;
        return NAME_FAILED;
    }
    if (rc == ERROR_ALREADY_EXISTS) {
        (void)CloseHandle(ev);
        return NAME_TAKEN;
    }
    *out = ev;
    return NAME_CREATED;
}

/* Wake one sleeper of lock I (its word just went from a value with
   SYNC_WAITERS to another owner or to 0). */
static void
wake_lock(const sync_handles *h, int i)
{
    if (h->lock[i] != 0)
        (void)SetEvent((HANDLE)h->lock[i]);
}

/* H just claimed its slot: its previous holder is gone, so a lock word still
   naming it is an orphan that no waiter could ever take over (they would
   find the slot's name taken, by us).  Free it and wake its sleepers. */
static void
clear_orphans(sync_handles *h)
{
    uint32_t v;
    int i;

    for (i = 0; i < SYNC_NLOCKS; i++) {
        if (h->words[i] == NULL)
            continue;
        v = at_load32(h->words[i]);
        while (OWNER(v) == h->slot) {
            if (at_cas32_val(h->words[i], &v, 0)) {
                if (v & SYNC_WAITERS)
                    wake_lock(h, i);
                break;
            }
        }
    }
}

/* Claim a free slot for H (whose name and events are set): scan from a
   point that differs between processes and objects, so that claims rarely
   meet a taken name. */
static shm_status
claim_slot(sync_handles *h, shm_error *err)
{
    uint32_t start, i, k;
    HANDLE ev;
    DWORD code = 0;

    start = (uint32_t)((uint64_t)sync_now_ns() ^
                       ((uint64_t)GetCurrentProcessId() * 2654435761u) ^
                       (uint64_t)(uintptr_t)h);
    for (i = 0; i < SYNC_SLOT_MAX; i++) {
        k = 1u + (start + i) % SYNC_SLOT_MAX;
        switch (create_slot_name(h, k, &ev, &code)) {
        case NAME_CREATED:
            h->live = (intptr_t)ev;
            h->slot = k;
            clear_orphans(h);
            return SHM_OK;
        case NAME_TAKEN:
            break;
        case NAME_FAILED:
            return shm_fail_os(err, "CreateEventW", (int)code);
        }
    }
    /* Every slot name taken: more objects than owner ids (or squatters). */
    return shm_fail_os(err, "CreateEventW", ERROR_NO_SYSTEM_RESOURCES);
}

/*
 * The lock WORD, found holding V (another object's slot), stayed busy: if
 * its owner is gone, take the lock over for H.  1 taken, 0 not (the owner
 * lives, or another thread or process is checking it right now and holds
 * its name: that one takes the lock over if anyone does).
 */
static int
take_from_dead(sync_handles *h, uint32_t *word, uint32_t v)
{
    uint32_t owner = OWNER(v);
    HANDLE ev;
    DWORD code;
    int taken = 0;

    /* NAME_FAILED (out of resources, say) is no proof of death: the owner
       counts as alive and is asked again next slice. */
    if (create_slot_name(h, owner, &ev, &code) != NAME_CREATED)
        return 0;
    /* No one held the owner's name, and while we do no one can claim that
       slot: every word naming it is an orphan. */
    v = at_load32(word);
    while (OWNER(v) == owner) {
        if (at_cas32_val(word, &v, h->slot | (v & SYNC_WAITERS))) {
            taken = 1;
            break;
        }
    }
    (void)CloseHandle(ev);
    return taken;
}

/* ---- handles ---------------------------------------------------------------- */

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
    wchar_t full[SHM_NAME_MAX + SUFFIX_MAX + 1];
    size_t len = wcslen(name);
    shm_status status;
    int i;

    (void)fd;       /* the segment keeps its mapping handle */
    if (len > SHM_NAME_MAX)
        return shm_fail(err, SHM_EVALUE, "name is too long");
    wmemcpy(h->base, name, len + 1);
    for (i = 0; i < SYNC_NLOCKS; i++) {
        h->words[i] = words[i];
        if (words[i] == NULL)
            continue;       /* a lock the caller does not use: no event */
        derive(full, h->base, lock_suffix[i]);
        /* Auto-reset: a SetEvent lets one sleeper go. */
        h->lock[i] = (intptr_t)CreateEventW(NULL, FALSE, FALSE, full);
        if (h->lock[i] == 0)
            return open_failed(h, "CreateEventW", err);
    }
    for (i = 0; i < SYNC_NWORDS; i++) {
        derive(full, h->base, sem_suffix[i]);
        h->sem[i] = (intptr_t)CreateSemaphoreW(NULL, 0, SEM_MAX, full);
        if (h->sem[i] == 0)
            return open_failed(h, "CreateSemaphoreW", err);
    }
    /* Last: claiming clears orphaned words and wakes their sleepers, which
       needs the events. */
    status = claim_slot(h, err);
    if (status != SHM_OK)
        sync_handles_close(h);
    return status;
}

/* ---- locks ------------------------------------------------------------------ */

/* Whole milliseconds from NOW to UNTIL (> NOW), rounded up so that a wait
   never ends just before it and spins on a zero timeout. */
static DWORD
ms_until(int64_t until, int64_t now)
{
    return (DWORD)((until - now + 999999) / 1000000);
}

static shm_status
lock_corrupt(shm_error *err)
{
    return shm_fail(err, SHM_ECORRUPT, "lock word is corrupt (it names no valid owner; header "
                                       "overwritten?)");
}

static shm_status
lock_busy(shm_error *err)
{
    return shm_fail(err, SHM_ETIMEOUT, "the lock stayed busy until the timeout");
}

/* H can take LOCK_ID: attached, and the lock was given a word at open. */
static int
lock_usable(const sync_handles *h, sync_lock_id lock_id)
{
    return h->slot != 0 && h->lock[lock_id] != 0;
}

shm_status
sync_trylock(sync_handles *h, sync_lock_id lock_id, uint32_t *word, shm_error *err)
{
    uint32_t v = 0;

    if (!lock_usable(h, lock_id))
        return shm_fail(err, SHM_EVALUE, "lock used by an object that is not attached");
    if (at_cas32_val(word, &v, h->slot))
        return SHM_OK;
    return owner_valid(v) ? lock_busy(err) : lock_corrupt(err);
}

shm_status
sync_lock(sync_handles *h, sync_lock_id lock_id, uint32_t *word, int64_t deadline,
          shm_error *err)
{
    uint32_t me = h->slot, v;
    int64_t now, until;
    DWORD rc;
    int i, probed = 0;

    if (!lock_usable(h, lock_id))
        return shm_fail(err, SHM_EVALUE, "lock used by an object that is not attached");
    for (i = 0; ; i++) {
        /* Read before writing: a failed compare-and-swap still takes the
           cache line away from the holder. */
        v = at_load32(word);
        if (v == 0 && at_cas32_val(word, &v, me))
            return SHM_OK;
        if (!owner_valid(v))
            return lock_corrupt(err);
        if (i >= LOCK_SPINS)
            break;
        sync_cpu_relax();
    }

    /* Still busy: is its owner alive?  Asked even when the deadline has
       passed, so that a try (timeout 0) takes over a dead owner's lock at
       once, as it would a free one. */
    if (OWNER(v) != me) {
        probed = 1;
        if (take_from_dead(h, word, v))
            return SHM_OK;
    }
    now = sync_now_ns();
    if (deadline <= now)
        return lock_busy(err);
    until = deadline - now > (int64_t)SLICE_MS * 1000000 ? now + (int64_t)SLICE_MS * 1000000
                                                         : deadline;
    for (;;) {
        v = at_load32(word);
        if (v == 0) {
            /* Taken after sleeping: keep the bit, others may sleep too. */
            if (at_cas32_val(word, &v, me | SYNC_WAITERS))
                return SHM_OK;
            continue;
        }
        if (!owner_valid(v))
            return lock_corrupt(err);
        if (OWNER(v) != me && !probed) {
            /* Once per slice: is the (new) owner still alive? */
            probed = 1;
            if (take_from_dead(h, word, v))
                return SHM_OK;
            continue;
        }
        /* Announce the sleep on the value seen: if the word moved (released,
           taken over), look again instead. */
        if (!(v & SYNC_WAITERS) && !at_cas32_val(word, &v, v | SYNC_WAITERS))
            continue;
        now = sync_now_ns();
        if (now >= until)
            break;
        rc = WaitForSingleObject((HANDLE)h->lock[lock_id], ms_until(until, now));
        if (rc == WAIT_TIMEOUT)
            break;
        if (rc != WAIT_OBJECT_0)
            return shm_fail_os(err, "WaitForSingleObject", (int)GetLastError());
        /* Woken (or a stale wake): look again. */
    }
    /* The slice is over: one last try, then back to the caller, which
       checks for signals and calls again with the same deadline. */
    v = 0;
    if (at_cas32_val(word, &v, me | SYNC_WAITERS))
        return SHM_OK;
    if (!owner_valid(v))
        return lock_corrupt(err);
    if (until >= deadline)
        return lock_busy(err);
    return shm_fail(err, SHM_EINTR, "lock wait slice");
}

void
sync_unlock(sync_handles *h, sync_lock_id lock_id, uint32_t *word)
{
    uint32_t me = h->slot, v = me;

    if (me == 0)
        return;
    if (at_cas32_val(word, &v, 0))
        return;     /* nobody sleeps on it: no system call */
    while (OWNER(v) == me) {
        if (at_cas32_val(word, &v, 0)) {
            if (v & SYNC_WAITERS)
                wake_lock(h, lock_id);
            return;
        }
    }
    /* The word names someone else: overwritten by another process.  Leave
       it; its next locker sees what it holds. */
}

/* ---- waits ------------------------------------------------------------------ */

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
