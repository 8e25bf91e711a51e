/*
 * test_segment.c -- the Windows platform layer (src/platform/segment_win32.c)
 * between real Windows processes.  Run with no argument it is the parent:
 * it runs every test and starts itself again with CreateProcessW, a role
 * word and the names to use, whenever a second process is needed (the
 * roles table at the end, run by harness_main):
 *
 *   test_segment.exe                      all tests; last line "all passed"
 *   test_segment.exe rw NAME              open NAME, check, write a reply
 *   test_segment.exe hold NAME SIZE READY GO
 *                                         create NAME, signal READY, wait for GO
 *   test_segment.exe big NAME             open the 4 GiB + 64 KiB mapping
 *   test_segment.exe open NAME TEXT       open NAME, expect TEXT at offset 0
 *   test_segment.exe rowrite NAME         write through a read-only view
 *                                         (must die of an access violation)
 *
 * Synchronisation is by named events and process handles with deadlines;
 * nothing sleeps.  Every child is reaped (killed first if it overstays).
 */
#include "platform/segment.h"
#include "win32_harness.h"  /* CHECK, crash filter, spawn/reap helpers */

#include <stdint.h>     /* uint64_t */
#include <stdio.h>      /* printf */
#include <string.h>     /* memcmp, memcpy, strcmp, strlen */
#include <wchar.h>      /* wcscmp, swprintf, wcstoull */
#include <windows.h>    /* CreateEventW, VirtualQuery, GetSystemInfo */

#define DEADLINE_MS 60000u          /* generous: a loaded CI machine under Wine */
#define REPLY_OFFSET 128
#define BIG_SIZE ((4ull << 30) + (64ull << 10))   /* needs the high size word */
#define BIG_MID (4ull << 30)                      /* first byte past 32 bits */

/* 0xC0000005, as GetExitCodeProcess reports a process ended by it
   (via harness_crash_filter). */
#define ACCESS_VIOLATION 0xC0000005u

static wchar_t name_prefix[64];

/* A name unique to this run and TAG, optionally behind a namespace prefix. */
static void
make_name(wchar_t *buf, size_t cap, const wchar_t *ns, const wchar_t *tag)
{
    swprintf(buf, cap, L"%lspyshm-t%lu-%ls", ns, (unsigned long)GetCurrentProcessId(), tag);
}

static int
text_at(const shm_segment *seg, size_t offset, const char *text)
{
    size_t len = strlen(text) + 1;
    return offset <= seg->size && len <= seg->size - offset
           && memcmp((const char *)seg->addr + offset, text, len) == 0;
}

static void
put_text(shm_segment *seg, size_t offset, const char *text)
{
    memcpy((char *)seg->addr + offset, text, strlen(text) + 1);
}

static DWORD
protection_of(const void *addr)
{
    MEMORY_BASIC_INFORMATION mbi;

    if (VirtualQuery(addr, &mbi, sizeof mbi) == 0)
        return 0;
    return mbi.Protect;
}

/* The size of the view at ADDR as the OS sees it (whole pages). */
static unsigned long long
view_bytes(const void *addr)
{
    MEMORY_BASIC_INFORMATION mbi;

    if (VirtualQuery(addr, &mbi, sizeof mbi) == 0)
        return 0;
    return (unsigned long long)mbi.RegionSize;
}

/* Run a child with ARGS to its end; return its exit code. */
static DWORD
run_child(const wchar_t *args)
{
    PROCESS_INFORMATION pi;

    if (!harness_spawn_self(args, &pi))
        return 0xDEADBEEFu;
    return harness_reap(&pi, DEADLINE_MS);
}

/* ===================================================================== */
/* Children: each returns its exit code (0 = every check held).           */

/* rw NAME */
static int
child_rw(wchar_t **arg)
{
    const wchar_t *name = arg[0];
    shm_segment seg;
    shm_error err;

    shm_segment_init(&seg);
    if (!CHECK(shm_segment_open(&seg, name, 0, &err) == SHM_OK))
        return 1;
    CHECK_EQ(seg.size, 4096);       /* created with 4096: already whole pages */
    CHECK_EQ(seg.created, 0);
    CHECK(text_at(&seg, 0, "written by the parent"));
    put_text(&seg, REPLY_OFFSET, "written by the child");
    shm_segment_close(&seg);
    return *harness_failures() != 0;
}

/* hold NAME SIZE READY GO */
static int
child_hold(wchar_t **arg)
{
    const wchar_t *name = arg[0];
    shm_segment seg;
    shm_error err;
    size_t size = (size_t)wcstoull(arg[1], NULL, 10);
    HANDLE ready = OpenEventW(EVENT_MODIFY_STATE, FALSE, arg[2]);
    HANDLE go = OpenEventW(SYNCHRONIZE, FALSE, arg[3]);
    int rc = 1;

    shm_segment_init(&seg);
    if (!CHECK(ready != NULL && go != NULL))
        goto done;
    if (!CHECK(shm_segment_create(&seg, name, size, 0600, 0, &err) == SHM_OK))
        goto done;
    CHECK_EQ(seg.created, 1);
    CHECK_EQ(seg.size, size);       /* the creator sees its exact size */
    put_text(&seg, 0, "held by the child");
    CHECK(SetEvent(ready));
    /* The parent has no other way to end us: a missing GO is a failure. */
    if (CHECK(harness_wait_event(go, NULL, DEADLINE_MS, "GO")))
        rc = *harness_failures() != 0;
done:
    shm_segment_close(&seg);
    if (ready != NULL)
        CloseHandle(ready);
    if (go != NULL)
        CloseHandle(go);
    return rc;
}

/* big NAME */
static int
child_big(wchar_t **arg)
{
    const wchar_t *name = arg[0];
    shm_segment seg;
    shm_error err;
    const char *p;

    shm_segment_init(&seg);
    if (!CHECK(shm_segment_open(&seg, name, 0, &err) == SHM_OK))
        return 1;
    /* 4 GiB + 64 KiB is a whole number of pages: VirtualQuery adds nothing. */
    if (CHECK_EQ(seg.size, BIG_SIZE)) {
        p = (const char *)seg.addr;
        CHECK(memcmp(p, "first", 6) == 0);
        CHECK(memcmp(p + BIG_MID, "at4G", 5) == 0);
        CHECK(memcmp(p + BIG_SIZE - 8, "last", 5) == 0);
        put_text(&seg, 8, "child1");
        put_text(&seg, BIG_SIZE - 16, "child2");
    }
    shm_segment_close(&seg);
    return *harness_failures() != 0;
}

/* open NAME TEXT */
static int
child_open(wchar_t **arg)
{
    const wchar_t *name = arg[0];
    const char *text = peer_utf8(arg[1]);
    shm_segment seg;
    shm_error err;

    shm_segment_init(&seg);
    if (!CHECK(shm_segment_open(&seg, name, 1, &err) == SHM_OK)) {
        printf("child open: os_code %d\n", err.os_code);
        return 1;
    }
    CHECK(text_at(&seg, 0, text));
    shm_segment_close(&seg);
    return *harness_failures() != 0;
}

/* rowrite NAME */
static int
child_rowrite(wchar_t **arg)
{
    const wchar_t *name = arg[0];
    shm_segment seg;
    shm_error err;
    volatile char *p;

    shm_segment_init(&seg);
    if (!CHECK(shm_segment_open(&seg, name, 1, &err) == SHM_OK))
        return 1;
    if (!CHECK(text_at(&seg, 0, "read-only test")))     /* reading is allowed */
        return 1;
    printf("rowrite: writing through a read-only view; an access violation must follow\n");
    p = (volatile char *)seg.addr;
    p[0] = 'X';     /* must fault: the view was mapped with FILE_MAP_READ */
    printf("rowrite: FAIL: the write went through\n");
    return 4;
}

/* ===================================================================== */
/* Parent tests.                                                          */

static void
test_page_size(void)
{
    SYSTEM_INFO si;
    size_t ps = shm_page_size();

    GetSystemInfo(&si);
    CHECK_EQ(ps, si.dwPageSize);
    CHECK(ps >= 4096 && (ps & (ps - 1)) == 0);
}

static void
test_values(void)
{
    wchar_t longname[SHM_NAME_MAX + 2];
    shm_segment seg;
    shm_error err;
    size_t i;

    shm_segment_init(&seg);
    CHECK(seg.addr == NULL && seg.handle == -1);
    shm_segment_close(&seg);        /* safe on a fresh record */

    CHECK(shm_segment_create(&seg, L"", 4096, 0600, 0, &err) == SHM_EVALUE);
    CHECK(shm_segment_open(&seg, L"", 0, &err) == SHM_EVALUE);
    CHECK(shm_segment_unlink(L"", &err) == SHM_EVALUE);

    /* SHM_NAME_MAX + 1 characters is refused; SHM_NAME_MAX is fine. */
    make_name(longname, SHM_NAME_MAX + 2, L"", L"long-");
    for (i = wcslen(longname); i < SHM_NAME_MAX + 1; i++)
        longname[i] = L'x';
    longname[SHM_NAME_MAX + 1] = L'\0';
    CHECK(shm_segment_create(&seg, longname, 4096, 0600, 0, &err) == SHM_EVALUE);
    CHECK(err.detail != NULL);
    CHECK(shm_segment_open(&seg, longname, 0, &err) == SHM_EVALUE);
    longname[SHM_NAME_MAX] = L'\0';
    CHECK(shm_segment_create(&seg, longname, 4096, 0600, 0, &err) == SHM_OK);
    shm_segment_close(&seg);

    CHECK(shm_segment_create(&seg, name_prefix, 0, 0600, 0, &err) == SHM_EVALUE);
    CHECK(seg.addr == NULL);
}

static void
test_missing(void)
{
    wchar_t name[128];
    shm_segment seg;
    shm_error err;

    make_name(name, 128, L"", L"missing");
    shm_segment_init(&seg);
    CHECK(shm_segment_open(&seg, name, 0, &err) == SHM_EOS);
    CHECK_EQ(err.os_code, ERROR_FILE_NOT_FOUND);
    CHECK(err.call != NULL && strcmp(err.call, "OpenFileMappingW") == 0);
    CHECK(shm_segment_open(&seg, name, 1, &err) == SHM_EOS);
    CHECK_EQ(err.os_code, ERROR_FILE_NOT_FOUND);
    CHECK(seg.addr == NULL && seg.handle == -1);
}

/* Exclusive create, open-or-create, unlink and close in one process. */
static void
test_one_process(void)
{
    wchar_t name[128];
    shm_segment a, b, c;
    shm_error err;

    make_name(name, 128, L"", L"local");
    shm_segment_init(&a);
    shm_segment_init(&b);
    shm_segment_init(&c);
    if (!CHECK(shm_segment_create(&a, name, 5000, 0600, 0, &err) == SHM_OK))
        return;
    CHECK_EQ(a.created, 1);
    CHECK_EQ(a.size, 5000);                 /* the creator's exact size */
    CHECK(a.handle != -1 && a.readonly == 0);
    CHECK_EQ(protection_of(a.addr), PAGE_READWRITE);
    put_text(&a, 0, "first");

    /* Exclusive create of a taken name: ERROR_ALREADY_EXISTS, and the
       extra handle it got is closed without harm to the original. */
    CHECK(shm_segment_create(&b, name, 100, 0600, 0, &err) == SHM_EOS);
    CHECK_EQ(err.os_code, ERROR_ALREADY_EXISTS);
    CHECK(err.call != NULL && strcmp(err.call, "CreateFileMappingW") == 0);
    CHECK(b.addr == NULL && b.handle == -1);
    CHECK(text_at(&a, 0, "first"));

    /* Open-or-create: the old object at its old size, page-rounded. */
    if (CHECK(shm_segment_create(&b, name, 1 << 20, 0600, SHM_EXIST_OK, &err) == SHM_OK)) {
        CHECK_EQ(b.created, 0);
        CHECK_EQ(b.size, 8192);
        CHECK(text_at(&b, 0, "first"));
        put_text(&b, 64, "via b");
        CHECK(text_at(&a, 64, "via b"));    /* two views, one object */
    }

    /* Read-only open: a read-only view, same bytes. */
    if (CHECK(shm_segment_open(&c, name, 1, &err) == SHM_OK)) {
        CHECK_EQ(c.readonly, 1);
        CHECK_EQ(c.size, 8192);
        CHECK_EQ(protection_of(c.addr), PAGE_READONLY);
        CHECK(text_at(&c, 64, "via b"));
    }

    /* unlink is a no-op on Windows: the name stays while handles live. */
    CHECK(shm_segment_unlink(name, &err) == SHM_OK);
    shm_segment_close(&c);
    CHECK(shm_segment_open(&c, name, 0, &err) == SHM_OK);

    /* close is idempotent and leaves sentinels behind. */
    shm_segment_close(&a);
    shm_segment_close(&a);
    CHECK(a.addr == NULL && a.handle == -1 && a.size == 0);
    shm_segment_close(&b);
    shm_segment_close(&c);
    shm_segment_close(&c);

    /* Every handle is gone, so is the name. */
    CHECK(shm_segment_open(&a, name, 0, &err) == SHM_EOS);
    CHECK_EQ(err.os_code, ERROR_FILE_NOT_FOUND);
}

/* The parent creates and writes; a child opens, reads and replies. */
static void
test_parent_creates(void)
{
    wchar_t name[128], args[256];
    shm_segment seg, ro;
    shm_error err;

    make_name(name, 128, L"", L"rw");
    shm_segment_init(&seg);
    shm_segment_init(&ro);
    if (!CHECK(shm_segment_create(&seg, name, 4096, 0600, 0, &err) == SHM_OK))
        return;
    put_text(&seg, 0, "written by the parent");
    /* A read-only view held across the child's write sees it too. */
    CHECK(shm_segment_open(&ro, name, 1, &err) == SHM_OK);

    swprintf(args, 256, L"rw %ls", name);
    CHECK_EQ(run_child(args), 0);
    CHECK(text_at(&seg, REPLY_OFFSET, "written by the child"));
    if (ro.addr != NULL)
        CHECK(text_at(&ro, REPLY_OFFSET, "written by the child"));
    shm_segment_close(&ro);
    shm_segment_close(&seg);
}

/*
 * A child creates 5000 bytes and waits.  The parent sees the page-rounded
 * size, is refused an exclusive create, gets the old object with
 * SHM_EXIST_OK, and then watches the name outlive its creator while the
 * parent holds a handle, and vanish when that last handle closes.
 */
static void
test_child_creates(void)
{
    wchar_t name[128], ready_name[128], go_name[128], args[512];
    PROCESS_INFORMATION pi;
    HANDLE ready, go;
    shm_segment seg, again;
    shm_error err;
    DWORD code;
    size_t ps = shm_page_size();

    make_name(name, 128, L"", L"held");
    make_name(ready_name, 128, L"", L"ready");
    make_name(go_name, 128, L"", L"go");
    shm_segment_init(&seg);
    shm_segment_init(&again);
    /* Manual-reset, initially clear, not inheritable (NULL attributes). */
    ready = CreateEventW(NULL, TRUE, FALSE, ready_name);
    go = CreateEventW(NULL, TRUE, FALSE, go_name);
    if (!CHECK(ready != NULL && go != NULL))
        goto out;

    swprintf(args, 512, L"hold %ls 5000 %ls %ls", name, ready_name, go_name);
    if (!CHECK(harness_spawn_self(args, &pi)))
        goto out;
    if (CHECK(harness_wait_event(ready, pi.hProcess, DEADLINE_MS, "READY"))) {
        if (CHECK(shm_segment_open(&seg, name, 0, &err) == SHM_OK)) {
            /* Windows reports whole pages: 8192 with 4 KiB pages. */
            CHECK_EQ(seg.size, (5000 + ps - 1) / ps * ps);
            CHECK(seg.size % ps == 0 && seg.size >= 5000);
            CHECK(text_at(&seg, 0, "held by the child"));
        }
        CHECK(shm_segment_create(&again, name, 4096, 0600, 0, &err) == SHM_EOS);
        CHECK_EQ(err.os_code, ERROR_ALREADY_EXISTS);
        if (CHECK(shm_segment_create(&again, name, 1 << 20, 0600, SHM_EXIST_OK, &err) == SHM_OK)) {
            CHECK_EQ(again.created, 0);
            CHECK_EQ(again.size, seg.size);      /* the old size, not 1 MiB */
            CHECK(text_at(&again, 0, "held by the child"));
            shm_segment_close(&again);
        }
    }
    CHECK(SetEvent(go));
    code = harness_reap(&pi, DEADLINE_MS);
    CHECK_EQ(code, 0);

    /* The creator is gone; our handle keeps the name alive. */
    if (CHECK(shm_segment_open(&again, name, 1, &err) == SHM_OK))
        CHECK(text_at(&again, 0, "held by the child"));
    shm_segment_close(&again);
    shm_segment_close(&seg);
    /* That was the last handle: the name is gone. */
    CHECK(shm_segment_open(&again, name, 0, &err) == SHM_EOS);
    CHECK_EQ(err.os_code, ERROR_FILE_NOT_FOUND);
out:
    if (ready != NULL)
        CloseHandle(ready);
    if (go != NULL)
        CloseHandle(go);
}

/* 4 GiB + 64 KiB: both size words.  Only a few pages are touched. */
static void
test_big(void)
{
    wchar_t name[128], args[256];
    shm_segment seg;
    shm_error err;
    char *p;

    if (sizeof(size_t) < 8) {
        printf("skip test_big: a 32-bit process cannot map 4 GiB\n");
        return;
    }
    make_name(name, 128, L"", L"big");
    shm_segment_init(&seg);
    if (!CHECK(shm_segment_create(&seg, name, (size_t)BIG_SIZE, 0600, 0, &err) == SHM_OK)) {
        printf("test_big: create failed, os_code %d (%s)\n", err.os_code,
               err.call ? err.call : "?");
        return;
    }
    CHECK_EQ(seg.size, BIG_SIZE);
    /* Ask the OS too before touching the far end: a mapping made without
       the high size word would be 64 KiB and the write below would fault. */
    if (!CHECK_EQ(view_bytes(seg.addr), BIG_SIZE)) {
        shm_segment_close(&seg);
        return;
    }
    p = (char *)seg.addr;
    memcpy(p, "first", 6);
    memcpy(p + BIG_MID, "at4G", 5);
    memcpy(p + BIG_SIZE - 8, "last", 5);

    swprintf(args, 256, L"big %ls", name);
    CHECK_EQ(run_child(args), 0);
    CHECK(memcmp(p + 8, "child1", 7) == 0);
    CHECK(memcmp(p + BIG_SIZE - 16, "child2", 7) == 0);
    shm_segment_close(&seg);
}

/* Local\ and Global\ names pass through to the OS unchanged. */
static void
test_namespaces(void)
{
    static const wchar_t *const spaces[] = { L"Local\\", L"Global\\" };
    wchar_t name[160], args[320];
    shm_segment seg, alias;
    shm_error err;
    size_t i;

    for (i = 0; i < sizeof spaces / sizeof spaces[0]; i++) {
        make_name(name, 160, spaces[i], L"ns");
        shm_segment_init(&seg);
        if (shm_segment_create(&seg, name, 4096, 0600, 0, &err) != SHM_OK) {
            /* On Windows a mapping in Global\ needs SeCreateGlobalPrivilege
               outside session 0 ("Kernel Object Namespaces"); Wine grants
               it, so there this branch is never taken. */
            if (i == 1 && err.status == SHM_EOS && err.os_code == ERROR_ACCESS_DENIED) {
                printf("skip Global\\ create: ERROR_ACCESS_DENIED (no SeCreateGlobalPrivilege)\n");
                continue;
            }
            CHECK(!"create in a namespace");
            printf("namespace %ls: os_code %d\n", spaces[i], err.os_code);
            continue;
        }
        put_text(&seg, 0, "namespaced");
        swprintf(args, 320, L"open %ls namespaced", name);
        CHECK_EQ(run_child(args), 0);
        shm_segment_close(&seg);
    }

    /* A plain name lives in the session namespace, which Local\ names. */
    make_name(name, 160, L"", L"plain");
    shm_segment_init(&seg);
    shm_segment_init(&alias);
    if (CHECK(shm_segment_create(&seg, name, 4096, 0600, 0, &err) == SHM_OK)) {
        put_text(&seg, 0, "plain");
        make_name(name, 160, L"Local\\", L"plain");
        if (CHECK(shm_segment_open(&alias, name, 1, &err) == SHM_OK))
            CHECK(text_at(&alias, 0, "plain"));
        shm_segment_close(&alias);
        shm_segment_close(&seg);
    }
}

/* A write through a read-only view faults; the child dies of it. */
static void
test_readonly_write(void)
{
    wchar_t name[128], args[256];
    shm_segment seg;
    shm_error err;

    make_name(name, 128, L"", L"ro");
    shm_segment_init(&seg);
    if (!CHECK(shm_segment_create(&seg, name, 4096, 0600, 0, &err) == SHM_OK))
        return;
    put_text(&seg, 0, "read-only test");
    swprintf(args, 256, L"rowrite %ls", name);
    CHECK_EQ(run_child(args), ACCESS_VIOLATION);
    CHECK(text_at(&seg, 0, "read-only test"));      /* nothing got through */
    shm_segment_close(&seg);
}

static int
parent(void)
{
    make_name(name_prefix, 64, L"", L"");
    printf("test_segment: parent %lu\n", (unsigned long)GetCurrentProcessId());
    test_page_size();
    test_values();
    test_missing();
    test_one_process();
    test_parent_creates();
    test_child_creates();
    test_big();
    test_namespaces();
    test_readonly_write();
    return harness_finish();
}

static const harness_role roles[] = {
    {L"rw", 1, child_rw},
    {L"hold", 4, child_hold},
    {L"big", 1, child_big},
    {L"open", 2, child_open},
    {L"rowrite", 1, child_rowrite},
    {NULL, 0, NULL},
};

int
wmain(int argc, wchar_t **argv)
{
    return harness_main(argc, argv, parent, roles,
                        "usage: test_segment.exe [rw NAME | hold NAME SIZE READY GO | big NAME | "
                        "open NAME TEXT | rowrite NAME]");
}
