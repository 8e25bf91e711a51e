/*
 * platform/segment_posix.c -- named segments on POSIX systems (Linux, macOS,
 * the BSDs): platform/segment.h over shm_open and mmap.
 *
 * Owns: the shm_segment_* implementation for POSIX.
 * May include: the C library, POSIX headers, platform/segment.h (and
 * through it core/status.h).  No Python.h.
 *
 * shm_open(3) names start with one '/' and hold no other; the caller's name
 * comes without it and this file adds it.  Every call that can be
 * interrupted by a signal is retried on EINTR: the binding runs these calls
 * without the GIL and handles pending signals itself afterwards.
 */
#include "platform/segment.h"

#include <errno.h>      /* errno, EINTR, EEXIST, ENOENT */
#include <fcntl.h>      /* O_* flags, posix_fallocate */
#include <string.h>     /* memcpy, strlen, strchr */
#include <sys/mman.h>   /* shm_open, shm_unlink, mmap, munmap */
#include <sys/stat.h>   /* fstat, mode bits */
#include <unistd.h>     /* ftruncate, close, sysconf */

/* "/" + name + NUL */
#define PATH_BUF (SHM_NAME_MAX + 2)

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

/* Open PATH that exists (or fail with ENOENT), map it whole. */
static shm_status
open_path(shm_segment *seg, const char *path, int readonly, shm_error *err)
{
    struct stat st;
    int fd;
    shm_status status;

    do {
        fd = shm_open(path, readonly ? O_RDONLY : O_RDWR, 0);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return shm_fail_os(err, "shm_open", errno);

    if (fstat(fd, &st) != 0) {
        status = shm_fail_os(err, "fstat", errno);
        close_fd(fd);
        return status;
    }
    if (st.st_size <= 0) {
        /* A creator between shm_open and ftruncate, or a foreign empty
           object: there is nothing to map (mmap of 0 bytes is EINVAL). */
        close_fd(fd);
        return shm_fail(err, SHM_EVALUE, "segment has size 0 (not sized by its creator yet?)");
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
shm_segment_open(shm_segment *seg, const shm_char *name, int readonly, shm_error *err)
{
    char path[PATH_BUF];
    shm_status status = make_path(path, name, err);

    if (status != SHM_OK)
        return status;
    return open_path(seg, path, readonly, err);
}

/* Reserve SIZE bytes of backing store so that touching a page later cannot
   raise SIGBUS on a full tmpfs.  Filesystems without fallocate are left
   sparse, as they would be anyway. */
static int
reserve(int fd, size_t size)
{
#ifdef PYSHM_HAVE_POSIX_FALLOCATE
    int rc;
    do {
        rc = posix_fallocate(fd, 0, (off_t)size);
    } while (rc == EINTR);
    if (rc == EOPNOTSUPP || rc == EINVAL || rc == ENODEV)
        return 0;
    return rc;
#else
    (void)fd;
    (void)size;
    return 0;
#endif
}

shm_status
shm_segment_create(shm_segment *seg, const shm_char *name, size_t size,
                   int mode, int flags, shm_error *err)
{
    char path[PATH_BUF];
    shm_status status = make_path(path, name, err);
    int fd, rc, attempt;

    if (status != SHM_OK)
        return status;
    if (size == 0)
        return shm_fail(err, SHM_EVALUE, "size must be positive");
    if ((unsigned long long)size > (unsigned long long)INT64_MAX)
        return shm_fail(err, SHM_EVALUE, "size is too large");

    /* With SHM_EXIST_OK the name may vanish between our EEXIST and our
       open (someone unlinked it): try creating again a few times. */
    for (attempt = 0; ; attempt++) {
        do {
            fd = shm_open(path, O_CREAT | O_EXCL | O_RDWR, (mode_t)mode);
        } while (fd < 0 && errno == EINTR);
        if (fd >= 0)
            break;
        if (errno != EEXIST || !(flags & SHM_EXIST_OK))
            return shm_fail_os(err, "shm_open", errno);
        status = open_path(seg, path, 0, err);
        if (status != SHM_OK && status == SHM_EOS && err->os_code == ENOENT && attempt < 8)
            continue;
        return status;
    }

    /* We own a new, empty name: any failure from here removes it again. */
    do {
        rc = ftruncate(fd, (off_t)size);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
        status = shm_fail_os(err, "ftruncate", errno);
        goto fail;
    }
    rc = reserve(fd, size);
    if (rc != 0) {
        status = shm_fail_os(err, "posix_fallocate", rc);
        goto fail;
    }
    status = map_fd(seg, fd, size, 0, err);
    if (status != SHM_OK)
        goto fail;
    keep_or_close(seg, fd);
    seg->created = 1;
    return SHM_OK;

fail:
    close_fd(fd);
    (void)shm_unlink(path);
    return status;
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
