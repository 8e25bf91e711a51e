/*
 * platform/segment_posix.c -- named segments on POSIX systems (Linux, macOS,
 * the BSDs): platform/segment.h over shm_open and mmap.
 *
 * Owns: the shm_segment_* implementation for POSIX.
 * May include: the C library, POSIX headers, platform/segment.h (and
 * through it core/status.h), platform/sync.h (the clock).  No Python.h.
 *
 * shm_open(3) names start with one '/' and hold no other; the caller's name
 * comes without it and this file adds it.
 *
 * Signals: a call that a signal interrupts (EINTR) is made again unless
 * the caller's interrupted hook says to give up (shm_hooks; the binding runs
 * the Python signal handlers there); a bounded wait asks it after each sleep.
 * posix_fallocate runs in chunks with the hook asked between them: since
 * Linux 6.2 tmpfs lets only fatal signals interrupt it (a Ctrl-C would
 * otherwise wait for the whole reservation, seconds for many GiB), and
 * older kernels undo a whole call that a signal interrupts (a chunk costs
 * less to make again).
 *
 * Publishing whole (Linux): a new segment is an unnamed O_TMPFILE file in
 * /dev/shm -- where glibc's and musl's shm_open keep their names --, sized,
 * reserved and formatted, and only then linked under its name with
 * linkat(2), which fails with EEXIST if the name is taken: an exclusive
 * create, atomic for openers, and nothing to clean up if the creator dies
 * half-way (the unnamed file goes with its last descriptor).  Where the
 * kernel refuses that (no O_TMPFILE on tmpfs before Linux 3.11; linkat
 * needs /proc, or CAP_DAC_READ_SEARCH before 6.10), and on other systems,
 * the name is created with shm_open(O_CREAT | O_EXCL) first: openers can
 * see it empty for a moment and wait for it (shm_segment_appears_whole).
 *
 * Names that are not segments (Linux): any local user may put a FIFO, a
 * socket, a directory or a symbolic link under a name in /dev/shm (`mkfifo
 * /dev/shm/jobs`).  open(2) of a FIFO for reading waits for a writer, for
 * ever, and a link leads wherever its maker likes.  So every open of a
 * name is O_NONBLOCK | O_NOFOLLOW (glibc's and musl's shm_open hand the
 * flags to open(2); O_NONBLOCK changes nothing for a regular file), and
 * the descriptor's type is checked (fstat) before anything uses it.  An
 * open that the kind of file itself refused (ENXIO for a socket, ELOOP for
 * a link, EISDIR for a directory opened for writing, EACCES for a device on
 * the nodev mount) is told apart from a plain refusal by an lstat of the
 * name.  Either way the error is SHM_EOS with a detail naming what the
 * name is, and errno EISDIR for a directory (the OS's own word for it) or
 * ENODEV for every other kind -- what mmap(2) answers for a file it cannot
 * map, which is the question here.  Creating needs no check: O_CREAT |
 * O_EXCL and O_TMPFILE make a new regular file or fail (O_EXCL follows no
 * link; any entry under the name is EEXIST).
 * Other systems keep shm_open names out of the filesystem (FreeBSD, macOS:
 * only shm_open makes them), and FreeBSD's shm_open refuses any other flag
 * with EINVAL: no flag is added there.  The type check runs everywhere; it
 * takes a regular file or an object whose mode has no type bits (macOS's
 * fstat of a shared-memory object reports the permission bits only).
 */
#include "platform/segment.h"
#include "platform/sync.h"      /* sync_now_ns for bounded waits */

#include <errno.h>      /* errno, EINTR, EEXIST, ENOENT, ENODEV, EISDIR */
#include <fcntl.h>      /* O_* flags, posix_fallocate, linkat, AT_* */
#include <stdio.h>      /* snprintf */
#include <string.h>     /* memcpy, strlen, strchr */
#include <sys/mman.h>   /* shm_open, shm_unlink, mmap, munmap */
#include <sys/stat.h>   /* fstat, lstat, file types, mode bits */
#include <sys/statvfs.h>    /* fstatvfs */
#include <time.h>       /* nanosleep */
#include <unistd.h>     /* ftruncate, close, sysconf */

/* "/" + name + NUL */
#define PATH_BUF (SHM_NAME_MAX + 2)

/* Where shm_open keeps its names on Linux (glibc since 2.34 and musl fix it
   there; older glibc took the first tmpfs mount, /dev/shm in practice). */
#define SHM_DIR "/dev/shm"

/* posix_fallocate in pieces of at most this size, halved (down to the
   minimum) after each signal so that even frequent signals (a profiler's
   timer) let it progress; see the top of this file. */
#define RESERVE_CHUNK ((off_t)256 << 20)
#define RESERVE_CHUNK_MIN ((off_t)2 << 20)

#if defined(__linux__) && defined(O_TMPFILE)
#  define PUBLISH_WHOLE 1
#else
#  define PUBLISH_WHOLE 0
#endif

/* The flags every shm_open here adds (see "Names that are not segments"). */
#ifdef __linux__
#  define OPEN_SAFE (O_NONBLOCK | O_NOFOLLOW)
#else
#  define OPEN_SAFE 0
#endif

static shm_status
make_path(char *path, const char *name, shm_error *err)
{
    size_t len = strlen(name);

    if (len == 0)
        return shm_fail(err, SHM_EVALUE, "name is empty");
    if (len > SHM_NAME_MAX)
        return shm_fail(err, SHM_EVALUE, "name is too long");
    if (strchr(name, '/') != NULL)
        return shm_fail(err, SHM_EVALUE, "name must not contain '/'");
    path[0] = '/';
    memcpy(path + 1, name, len + 1);
    return SHM_OK;
}

static void
close_fd(int fd)
{
    /* close(2) must not be retried on EINTR: on Linux the descriptor is
       released whatever it returns. */
    int saved = errno;
    (void)close(fd);
    errno = saved;
}

/* What a file of type MODE is when it cannot be a segment (a static text
   for shm_error.detail); NULL when it can: a regular file, or an object
   without type bits (macOS, see the top of this file). */
static const char *
not_a_segment(mode_t mode)
{
    switch (mode & S_IFMT) {
    case 0:
    case S_IFREG:
        return NULL;
    case S_IFIFO:
        return "a FIFO (named pipe), not a shared-memory segment";
    case S_IFSOCK:
        return "a socket, not a shared-memory segment";
    case S_IFDIR:
        return "a directory, not a shared-memory segment";
    case S_IFLNK:
        return "a symbolic link, not a shared-memory segment (pyshm never follows links)";
    case S_IFCHR:
        return "a character device, not a shared-memory segment";
    case S_IFBLK:
        return "a block device, not a shared-memory segment";
    default:
        return "not a regular file, so not a shared-memory segment";
    }
}

/* The failure for a name of type MODE, WHAT being not_a_segment(MODE). */
static shm_status
fail_not_segment(shm_error *err, const char *call, mode_t mode, const char *what)
{
    return shm_fail_os_detail(err, call, S_ISDIR(mode) ? EISDIR : ENODEV, what);
}

/* A signal may have come: 1 when the caller's hook says to give up. */
static int
give_up(const shm_hooks *hooks)
{
    return hooks != NULL && hooks->interrupted != NULL &&
           hooks->interrupted(hooks->interrupted_arg) != 0;
}

/* After a call failed with CODE: 1 to make it again (a signal interrupted
   it and the caller's hook does not give up), else 0. */
static int
again(const shm_hooks *hooks, int code)
{
    return code == EINTR && !give_up(hooks);
}

/* The failure of CALL with CODE: SHM_EINTR when the hook gave up on a
   signal, else the OS error. */
static shm_status
fail_call(shm_error *err, const char *call, int code)
{
    if (code == EINTR)
        return shm_fail(err, SHM_EINTR, "interrupted by a signal");
    return shm_fail_os(err, call, code);
}

/*
 * shm_open of PATH failed with CODE (not EINTR): the failure to report.
 * When the name is there but is no segment, the open may have failed
 * because of what it is (see the top of this file): say what it is.
 * (Linux: the name's file is SHM_DIR + PATH; another system's names are
 * not files to look at.)
 */
static shm_status
fail_open(shm_error *err, const char *path, int code)
{
#ifdef __linux__
    char file[sizeof SHM_DIR + PATH_BUF];
    struct stat st;
    const char *what;

    if (code != ENOENT) {
        (void)snprintf(file, sizeof file, "%s%s", SHM_DIR, path);
        if (lstat(file, &st) == 0 && (what = not_a_segment(st.st_mode)) != NULL)
            return fail_not_segment(err, "shm_open", st.st_mode, what);
    }
#else
    (void)path;
#endif
    return fail_call(err, "shm_open", code);
}

void
shm_sleep_ns(int64_t ns)
{
    struct timespec ts;

    if (ns <= 0)
        return;
    ts.tv_sec = (time_t)(ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    (void)nanosleep(&ts, NULL);
}

int
shm_segment_appears_whole(void)
{
    return PUBLISH_WHOLE;
}

void
shm_segment_init(shm_segment *seg)
{
    seg->addr = NULL;
    seg->size = 0;
    seg->handle = -1;
    seg->readonly = 0;
    seg->created = 0;
    seg->keep_fd = 0;
}

size_t
shm_page_size(void)
{
    long ps = sysconf(_SC_PAGESIZE);
    return ps > 0 ? (size_t)ps : 4096;
}

static shm_status
map_fd(shm_segment *seg, int fd, size_t size, int readonly, shm_error *err)
{
    int prot = readonly ? PROT_READ : (PROT_READ | PROT_WRITE);
    void *addr = mmap(NULL, size, prot, MAP_SHARED, fd, 0);

    if (addr == MAP_FAILED)
        return shm_fail_os(err, "mmap", errno);
    seg->addr = addr;
    seg->size = size;
    seg->readonly = readonly;
    seg->handle = -1;
    return SHM_OK;
}

/* After a successful map_fd: keep FD when the caller asked, else close it
   (the mapping keeps the object alive). */
static void
keep_or_close(shm_segment *seg, int fd)
{
    if (seg->keep_fd)
        seg->handle = fd;
    else
        close_fd(fd);
}

/*
 * Open PATH that exists (or fail with ENOENT), map it whole.  Size 0 is a
 * creator that does not publish whole between its shm_open and its
 * ftruncate (another system, or another library): waited for, sleeping,
 * as long as HOOKS says; an object that stays empty is SHM_EVALUE.
 */
static shm_status
open_path(shm_segment *seg, const char *path, int readonly, const shm_hooks *hooks,
          shm_error *err)
{
    struct stat st;
    int fd, code;
    int64_t deadline = 0, pause = 10000;
    shm_status status;

    do {
        fd = shm_open(path, (readonly ? O_RDONLY : O_RDWR) | OPEN_SAFE, 0);
        code = errno;
    } while (fd < 0 && again(hooks, code));
    if (fd < 0)
        return code == EINTR ? fail_call(err, "shm_open", code) : fail_open(err, path, code);

    for (;;) {
        const char *what;

        if (fstat(fd, &st) != 0) {
            status = shm_fail_os(err, "fstat", errno);
            close_fd(fd);
            return status;
        }
        /* Before the size: a FIFO or a directory must not be waited for. */
        if ((what = not_a_segment(st.st_mode)) != NULL) {
            close_fd(fd);
            return fail_not_segment(err, "fstat", st.st_mode, what);
        }
        if (st.st_size > 0)
            break;
        if (deadline == 0)
            deadline = sync_now_ns() + (hooks != NULL ? hooks->empty_wait_ns : 0);
        if (sync_now_ns() >= deadline) {
            /* mmap of 0 bytes is EINVAL: there is nothing to map. */
            close_fd(fd);
            return shm_fail(err, SHM_EVALUE, "segment has size 0 (its creator never sized it)");
        }
        /* After every sleep, not only an interrupted one: a signal that
           came between two sleeps interrupted none. */
        shm_sleep_ns(pause);
        if (give_up(hooks)) {
            close_fd(fd);
            return fail_call(err, "nanosleep", EINTR);
        }
        pause = pause * 2 > 10000000 ? 10000000 : pause * 2;
    }
    if ((unsigned long long)st.st_size > (unsigned long long)SIZE_MAX) {
        close_fd(fd);
        return shm_fail(err, SHM_EVALUE, "segment is larger than this process can map");
    }
    status = map_fd(seg, fd, (size_t)st.st_size, readonly, err);
    if (status != SHM_OK) {
        close_fd(fd);
        return status;
    }
    keep_or_close(seg, fd);
    seg->created = 0;
    return SHM_OK;
}

shm_status
shm_segment_open_ex(shm_segment *seg, const shm_char *name, int readonly,
                    const shm_hooks *hooks, shm_error *err)
{
    char path[PATH_BUF];
    shm_status status = make_path(path, name, err);

    if (status != SHM_OK)
        return status;
    return open_path(seg, path, readonly, hooks, err);
}

/*
 * Reserve SIZE bytes of backing store so that touching a page later cannot
 * raise SIGBUS on a full tmpfs: 0 or an errno value (EINTR when the hook
 * gave up on a signal).  Filesystems without fallocate are left sparse, as
 * they would be anyway.  In chunks: tmpfs undoes the whole call when a
 * signal interrupts it, so only the current chunk is made again.
 */
static int
reserve(int fd, size_t size, const shm_hooks *hooks)
{
#ifdef PYSHM_HAVE_POSIX_FALLOCATE
    off_t done = 0, total = (off_t)size, chunk = RESERVE_CHUNK, n;
    struct statvfs vfs;
    int rc;

    /* More than is free fails anyway: refuse it before anything is taken.
       (One call for more than the filesystem's size is refused up front by
       tmpfs; the chunks would first fill the filesystem, and the machine's
       memory with it.  f_blocks 0: a tmpfs without a size limit.) */
    if (fstatvfs(fd, &vfs) == 0 && vfs.f_blocks > 0 && vfs.f_frsize > 0 &&
        (unsigned long long)size / vfs.f_frsize > (unsigned long long)vfs.f_bavail)
        return ENOSPC;
    while (done < total) {
        n = total - done < chunk ? total - done : chunk;
        rc = posix_fallocate(fd, done, n);
        if (rc == EINTR && again(hooks, rc)) {
            chunk = chunk / 2 < RESERVE_CHUNK_MIN ? RESERVE_CHUNK_MIN : chunk / 2;
            continue;
        }
        if (rc == EOPNOTSUPP || rc == EINVAL || rc == ENODEV)
            return 0;
        if (rc != 0)
            return rc;
        done += n;
        if (done < total && give_up(hooks))
            return EINTR;
    }
    return 0;
#else
    (void)fd;
    (void)size;
    (void)hooks;
    return 0;
#endif
}

/*
 * Make the new file FD a segment of SIZE bytes: size it, reserve it, map it
 * into SEG and run the format hook.  On failure SEG is left unmapped and
 * FD open (the caller closes it and removes any name).
 */
static shm_status
fill(shm_segment *seg, int fd, size_t size, const shm_hooks *hooks, shm_error *err)
{
    int rc, code;
    shm_status status;

    do {
        rc = ftruncate(fd, (off_t)size);
        code = errno;
    } while (rc != 0 && again(hooks, code));
    if (rc != 0)
        return fail_call(err, "ftruncate", code);
    rc = reserve(fd, size, hooks);
    if (rc != 0)
        return fail_call(err, "posix_fallocate", rc);
    status = map_fd(seg, fd, size, 0, err);
    if (status == SHM_OK && hooks != NULL && hooks->format != NULL) {
        status = hooks->format(hooks->format_arg, seg->addr, size, err);
        if (status != SHM_OK)
            shm_segment_close(seg);
    }
    return status;
}

#if PUBLISH_WHOLE
/*
 * Create PATH whole (see the top of this file).  SHM_OK; SHM_EOS with EEXIST
 * when the name is taken; or the status UNSUPPORTED set to 1 and SHM_OK not
 * returned when this kernel cannot (the caller then creates by name).
 */
static shm_status
create_whole(shm_segment *seg, const char *path, size_t size, int mode,
             const shm_hooks *hooks, int *unsupported, shm_error *err)
{
    char target[sizeof SHM_DIR + PATH_BUF], proc[64];
    int fd, rc, code;
    shm_status status;

    *unsupported = 0;
    do {
        fd = open(SHM_DIR, O_TMPFILE | O_RDWR | O_CLOEXEC, (mode_t)mode);
        code = errno;
    } while (fd < 0 && again(hooks, code));
    if (fd < 0) {
        /* EISDIR, EOPNOTSUPP, EINVAL: no O_TMPFILE here; ENOENT: no /dev/shm. */
        if (code == EISDIR || code == EOPNOTSUPP || code == EINVAL || code == ENOENT) {
            *unsupported = 1;
            return shm_fail_os(err, "open", code);
        }
        return fail_call(err, "open", code);
    }
    status = fill(seg, fd, size, hooks, err);
    if (status != SHM_OK) {
        close_fd(fd);
        return status;
    }
    (void)snprintf(target, sizeof target, "%s%s", SHM_DIR, path);
    /* The way open(2) gives for O_TMPFILE files, open to anyone; without
       /proc, AT_EMPTY_PATH links the descriptor itself (before Linux 6.10
       only with CAP_DAC_READ_SEARCH). */
    (void)snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    rc = linkat(AT_FDCWD, proc, AT_FDCWD, target, AT_SYMLINK_FOLLOW);
    code = errno;
    if (rc != 0 && code == ENOENT) {
        rc = linkat(fd, "", AT_FDCWD, target, AT_EMPTY_PATH);
        code = errno;
    }
    if (rc != 0) {
        close_fd(fd);
        shm_segment_close(seg);
        if (code != EEXIST)
            *unsupported = 1;
        return shm_fail_os(err, "linkat", code);
    }
    keep_or_close(seg, fd);     /* linked: the same file as the name's */
    return SHM_OK;
}
#endif

/* Create PATH by name: shm_open(O_CREAT | O_EXCL), then fill it.  Openers
   may see it before it is filled.  SHM_EOS with EEXIST when taken. */
static shm_status
create_named(shm_segment *seg, const char *path, size_t size, int mode,
             const shm_hooks *hooks, shm_error *err)
{
    int fd, code;
    shm_status status;

    do {
        fd = shm_open(path, O_CREAT | O_EXCL | O_RDWR | OPEN_SAFE, (mode_t)mode);
        code = errno;
    } while (fd < 0 && again(hooks, code));
    if (fd < 0)
        return fail_call(err, "shm_open", code);
    /* We own a new, empty name: any failure from here removes it again. */
    status = fill(seg, fd, size, hooks, err);
    if (status != SHM_OK) {
        close_fd(fd);
        (void)shm_unlink(path);
        return status;
    }
    keep_or_close(seg, fd);
    return SHM_OK;
}

/* Create PATH: whole where this system can, else by name. */
static shm_status
create_path(shm_segment *seg, const char *path, size_t size, int mode,
            const shm_hooks *hooks, shm_error *err)
{
#if PUBLISH_WHOLE
    int unsupported;
    shm_status status = create_whole(seg, path, size, mode, hooks, &unsupported, err);

    if (!unsupported)
        return status;
#endif
    return create_named(seg, path, size, mode, hooks, err);
}

shm_status
shm_segment_create_ex(shm_segment *seg, const shm_char *name, size_t size,
                      int mode, int flags, const shm_hooks *hooks, shm_error *err)
{
    char path[PATH_BUF];
    shm_status status = make_path(path, name, err);
    int attempt;

    if (status != SHM_OK)
        return status;
    if (size == 0)
        return shm_fail(err, SHM_EVALUE, "size must be positive");
    if ((unsigned long long)size > (unsigned long long)INT64_MAX)
        return shm_fail(err, SHM_EVALUE, "size is too large");

    /* With SHM_EXIST_OK, open first: the usual case when many start at once
       is that one of them created it already, and creating whole costs a
       full reservation.  Then create; a name taken meanwhile is opened; one
       that vanishes between our EEXIST and our open (someone unlinked it)
       is created again, a few times. */
    for (attempt = 0; ; attempt++) {
        if (flags & SHM_EXIST_OK) {
            status = open_path(seg, path, 0, hooks, err);
            if (status != SHM_EOS || err->os_code != ENOENT || attempt >= 8)
                return status;
        }
        status = create_path(seg, path, size, mode, hooks, err);
        if (status == SHM_OK) {
            seg->created = 1;
            return SHM_OK;
        }
        if (status != SHM_EOS || err->os_code != EEXIST || !(flags & SHM_EXIST_OK))
            return status;
    }
}

void
shm_segment_close(shm_segment *seg)
{
    void *addr = seg->addr;
    size_t size = seg->size;
    intptr_t fd = seg->handle;

    seg->addr = NULL;
    seg->size = 0;
    seg->handle = -1;
    if (addr != NULL)
        (void)munmap(addr, size);
    if (fd >= 0)
        close_fd((int)fd);
}

shm_status
shm_segment_unlink(const shm_char *name, shm_error *err)
{
    char path[PATH_BUF];
    shm_status status = make_path(path, name, err);

    if (status != SHM_OK)
        return status;
    if (shm_unlink(path) != 0)
        return shm_fail_os(err, "shm_unlink", errno);
    return SHM_OK;
}
