/*
 * platform/segment_win32.c -- named segments on Windows (page-file backed
 * file mappings): platform/segment.h over the Win32 API.
 *
 * Owns: the shm_segment_* implementation for Windows.
 * May include: the C library, <windows.h>, platform/segment.h (and through
 * it core/status.h).  No Python.h.
 *
 * A segment is a section object created with CreateFileMappingW on
 * INVALID_HANDLE_VALUE (backed by the paging file) and mapped whole with
 * MapViewOfFile.  Three differences from POSIX shape this file, each tested
 * in tests/c/win32/test_segment.c:
 *
 *   - CreateFileMappingW succeeds on an existing name and reports it only
 *     through GetLastError() == ERROR_ALREADY_EXISTS, so exclusive create is
 *     "create, then give the handle back if it was not new".
 *   - The size of an existing mapping cannot be asked for; VirtualQuery on
 *     the view gives it rounded up to whole pages.
 *   - There is no unlink: a name lives until its last handle (or view) is
 *     closed, in any process.
 *
 * Names are passed to the OS unchanged, so "Local\" and "Global\" namespace
 * prefixes work as documented in "Kernel Object Namespaces".
 *
 * seg->handle keeps the mapping HANDLE (as intptr_t) until close; -1 means
 * none.  CreateFileMappingW and OpenFileMappingW report failure with NULL,
 * never with INVALID_HANDLE_VALUE, so -1 can not be a live handle here.
 */
#include "platform/segment.h"

#include <stdint.h>     /* uint64_t */
#include <wchar.h>      /* wcslen */
#include <windows.h>    /* CreateFileMappingW, MapViewOfFile, VirtualQuery, ... */

#define NO_HANDLE ((intptr_t)-1)

static shm_status
check_name(const wchar_t *name, shm_error *err)
{
    size_t len = wcslen(name);

    if (len == 0)
        return shm_fail(err, SHM_EVALUE, "name is empty");
    if (len > SHM_NAME_MAX)
        return shm_fail(err, SHM_EVALUE, "name is too long");
    return SHM_OK;
}

void
shm_segment_init(shm_segment *seg)
{
    seg->addr = NULL;
    seg->size = 0;
    seg->handle = NO_HANDLE;
    seg->readonly = 0;
    seg->created = 0;
    seg->keep_fd = 0;   /* POSIX only: the mapping handle is always kept here */
}

size_t
shm_page_size(void)
{
    /* GetSystemInfo cannot fail.  dwPageSize is the unit VirtualQuery rounds
       to; dwAllocationGranularity (64 KiB) only constrains view offsets,
       which this layer always sets to 0. */
    SYSTEM_INFO si;

    GetSystemInfo(&si);
    return si.dwPageSize > 0 ? (size_t)si.dwPageSize : 4096;
}

/*
 * Size of the view at ADDR.  Windows has no call that returns a section's
 * size to an opener, so this asks VirtualQuery for the region that starts at
 * the view: every page of a fresh page-file view has the same state and
 * protection, so the region is the whole view, rounded up to a page
 * ("VirtualQuery function", MEMORY_BASIC_INFORMATION.RegionSize).  A 5000-byte
 * mapping therefore reads back as 8192 bytes on 4 KiB pages; the bytes past
 * the creator's size read as zero and are writable, as the OS allows.
 */
static shm_status
view_size(const void *addr, size_t *size, shm_error *err)
{
    MEMORY_BASIC_INFORMATION mbi;

    if (VirtualQuery(addr, &mbi, sizeof mbi) == 0)
        return shm_fail_os(err, "VirtualQuery", (int)GetLastError());
    *size = (size_t)mbi.RegionSize;
    return SHM_OK;
}

/*
 * Map all of mapping H and fill SEG.  SIZE is the creator's exact size, or 0
 * for "ask VirtualQuery".  On success SEG owns H; on failure H is closed.
 * FILE_MAP_WRITE maps a read/write view ("MapViewOfFile": FILE_MAP_WRITE
 * alone already allows reading); a size of 0 maps to the end of the section.
 */
static shm_status
map_handle(shm_segment *seg, HANDLE h, size_t size, int readonly, shm_error *err)
{
    DWORD access = readonly ? FILE_MAP_READ : (FILE_MAP_READ | FILE_MAP_WRITE);
    void *addr = MapViewOfFile(h, access, 0, 0, 0);
    shm_status status;

    if (addr == NULL) {
        status = shm_fail_os(err, "MapViewOfFile", (int)GetLastError());
        (void)CloseHandle(h);
        return status;
    }
    if (size == 0) {
        status = view_size(addr, &size, err);
        if (status != SHM_OK) {
            (void)UnmapViewOfFile(addr);
            (void)CloseHandle(h);
            return status;
        }
    }
    seg->addr = addr;
    seg->size = size;
    seg->handle = (intptr_t)h;
    seg->readonly = readonly;
    return SHM_OK;
}

int
shm_segment_appears_whole(void)
{
    /* A section gets its name and its size in one call, but its contents
       are written after: an opener can see it before the format hook ran. */
    return 0;
}

void
shm_sleep_ns(int64_t ns)
{
    if (ns > 0)
        Sleep((DWORD)((ns + 999999) / 1000000));
}

shm_status
shm_segment_create_ex(shm_segment *seg, const shm_char *name, size_t size,
                      int mode, int flags, const shm_hooks *hooks, shm_error *err)
{
    uint64_t size64 = (uint64_t)size;
    HANDLE h;
    DWORD code;
    shm_status status = check_name(name, err);

    (void)mode;     /* no POSIX permission bits here; the default DACL applies */
    if (status != SHM_OK)
        return status;
    if (size == 0)
        return shm_fail(err, SHM_EVALUE, "size must be positive");

    /* The size goes in two DWORDs ("CreateFileMappingW": dwMaximumSizeHigh,
       dwMaximumSizeLow); dropping the high word would silently make a
       4 GiB + 64 KiB request a 64 KiB mapping. */
    h = CreateFileMappingW(INVALID_HANDLE_VALUE, NULL, PAGE_READWRITE,
                           (DWORD)(size64 >> 32), (DWORD)(size64 & 0xFFFFFFFFu), name);
    /* Read the last error at once: on success it is ERROR_ALREADY_EXISTS
       when the name was taken (and the handle is to the old object, with its
       old size), and any later call may overwrite it. */
    code = GetLastError();
    if (h == NULL)
        return shm_fail_os(err, "CreateFileMappingW", (int)code);

    if (code == ERROR_ALREADY_EXISTS) {
        if (!(flags & SHM_EXIST_OK)) {
            /* Exclusive create: give the old object back untouched.  Our
               handle was only one more reference, so closing it removes
               nothing that belongs to the other process. */
            (void)CloseHandle(h);
            return shm_fail_os(err, "CreateFileMappingW", ERROR_ALREADY_EXISTS);
        }
        /* Open-or-create: keep the old object at its old size, which only
           the view can tell (page-rounded, see view_size). */
        status = map_handle(seg, h, 0, 0, err);
        if (status == SHM_OK)
            seg->created = 0;
        return status;
    }

    /* A new name.  If mapping fails, map_handle closes the only handle and
       the name dies with it: nothing is left behind.  So does a failed
       format (no EINTR here: the interrupted hook is never needed). */
    status = map_handle(seg, h, size, 0, err);
    if (status == SHM_OK && hooks != NULL && hooks->format != NULL) {
        status = hooks->format(hooks->format_arg, seg->addr, size, err);
        if (status != SHM_OK)
            shm_segment_close(seg);
    }
    if (status == SHM_OK)
        seg->created = 1;
    return status;
}

shm_status
shm_segment_open_ex(shm_segment *seg, const shm_char *name, int readonly,
                    const shm_hooks *hooks, shm_error *err)
{
    /* Ask only for the rights the view needs ("File Mapping Security and
       Access Rights"): FILE_MAP_ALL_ACCESS would also ask for
       SECTION_EXTEND_SIZE and be refused on a mapping whose creator granted
       us read/write only. */
    DWORD access = readonly ? FILE_MAP_READ : (FILE_MAP_READ | FILE_MAP_WRITE);
    HANDLE h;
    shm_status status = check_name(name, err);

    (void)hooks;    /* nothing here can be interrupted by a signal */
    if (status != SHM_OK)
        return status;
    h = OpenFileMappingW(access, FALSE, name);
    if (h == NULL)      /* ERROR_FILE_NOT_FOUND when no such name */
        return shm_fail_os(err, "OpenFileMappingW", (int)GetLastError());
    status = map_handle(seg, h, 0, readonly, err);
    if (status == SHM_OK)
        seg->created = 0;
    return status;
}

void
shm_segment_close(shm_segment *seg)
{
    /* Take the resources out of SEG first so a second call finds nothing. */
    void *addr = seg->addr;
    intptr_t handle = seg->handle;

    seg->addr = NULL;
    seg->size = 0;
    seg->handle = NO_HANDLE;
    if (addr != NULL)
        (void)UnmapViewOfFile(addr);
    if (handle != NO_HANDLE)
        (void)CloseHandle((HANDLE)handle);
}

shm_status
shm_segment_unlink(const shm_char *name, shm_error *err)
{
    /* Windows cannot remove a name: a section and its name live until the
       last handle to it is closed and the last view of it unmapped, in any
       process (see "Closing a File Mapping Object" and CloseHandle).  Keep
       the call harmless, but reject the same bad names as everywhere else. */
    return check_name(name, err);
}
