/*
 * Unit tests of the automatic virtio-balloon's cgroup reading and host
 * pressure sources
 *
 * The cgroup layout code runs against fake cgroup trees (plain files in a
 * temporary directory): parsing, limits and protections along a path,
 * libvirt's layouts.  The cgroup v2 source runs against the real thing
 * where this process can create a v2 cgroup with the memory controller
 * (a cgroup v2 host, as root): a child allocates in it and the source
 * must report the levels, the headroom and the cgroup's removal.
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/mman.h>
#include <sys/prctl.h>
#include "qapi/error.h"
#include "qemu/main-loop.h"
#include "qemu/units.h"
#include "monitor/monitor.h"
#include "hw/virtio/balloon-cgroup.h"
#include "hw/virtio/balloon-headroom.h"
#include "hw/virtio/balloon-pressure.h"

/* No monitor here: descriptors are given by number. */
int monitor_fd_param(Monitor *mon, const char *fdname, Error **errp)
{
    error_setg(errp, "no monitor");
    return -1;
}

/* A fake cgroup tree under a temporary directory. */
typedef struct FakeTree {
    char *mnt;
} FakeTree;

static void fake_write(const char *dir, const char *file, const char *text)
{
    g_autofree char *path = g_build_filename(dir, file, NULL);

    g_assert_true(g_file_set_contents(path, text, -1, NULL));
}

static char *fake_mkdir(FakeTree *t, const char *rel)
{
    char *dir = g_build_filename(t->mnt, rel, NULL);

    g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
    return dir;
}

static void fake_init(FakeTree *t)
{
    t->mnt = g_dir_make_tmp("fake-cgroupfs-XXXXXX", NULL);
    g_assert_nonnull(t->mnt);
}

static void fake_remove(const char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    const char *name;

    while (d && (name = g_dir_read_name(d))) {
        g_autofree char *path = g_build_filename(dir, name, NULL);

        if (g_file_test(path, G_FILE_TEST_IS_DIR)) {
            fake_remove(path);
        } else {
            unlink(path);
        }
    }
    if (d) {
        g_dir_close(d);
    }
    rmdir(dir);
}

static void fake_destroy(FakeTree *t)
{
    fake_remove(t->mnt);
    g_free(t->mnt);
}

/*
 * Headroom: levels at 80/90/95% of a cgroup's limit, at the setpoint, +5%
 * and +10% of the host's memory; polls sooner when near.
 */
static void test_headroom(void)
{
    static const struct {
        uint64_t usage_mib;
        BalloonPolicyLevel level;
    } cgroup[] = {
        { 0, BALLOON_POLICY_LEVEL_NONE }, { 799, BALLOON_POLICY_LEVEL_NONE },
        { 800, BALLOON_POLICY_LEVEL_LOW }, { 900, BALLOON_POLICY_LEVEL_MEDIUM },
        { 990, BALLOON_POLICY_LEVEL_CRITICAL },
        { 2000, BALLOON_POLICY_LEVEL_CRITICAL },
    };
    const BalloonHeadroomScale *cg = &balloon_headroom_cgroup;
    const uint64_t limit = 1000 * MiB;
    BalloonHeadroomScale host;
    int64_t prev = INT64_MAX;
    uint64_t usage;
    size_t i;

    for (i = 0; i < ARRAY_SIZE(cgroup); i++) {
        g_assert_cmpint(balloon_headroom_level(cg, cgroup[i].usage_mib * MiB,
                                               limit), ==, cgroup[i].level);
    }
    g_assert_cmpint(balloon_headroom_level(cg, 2000 * MiB, 0), ==,
                    BALLOON_POLICY_LEVEL_NONE);
    g_assert_cmpuint(balloon_headroom_threshold(cg, BALLOON_POLICY_LEVEL_MEDIUM,
                                                limit), ==, 900 * MiB);
    balloon_headroom_host_scale(&host, 70);
    g_assert_cmpuint(balloon_headroom_threshold(&host,
                                                BALLOON_POLICY_LEVEL_LOW,
                                                limit), ==, 700 * MiB);
    g_assert_cmpint(balloon_headroom_level(&host, 760 * MiB, limit), ==,
                    BALLOON_POLICY_LEVEL_MEDIUM);
    g_assert_cmpint(balloon_headroom_level(&host, 800 * MiB, limit), ==,
                    BALLOON_POLICY_LEVEL_CRITICAL);

    /* far: at most one look per 10 s; nearer: sooner, never below 100 ms */
    g_assert_cmpint(balloon_headroom_interval_ms(cg, 0, 1024 * GiB), ==,
                    BALLOON_HEADROOM_MAX_MS);
    for (usage = 0; usage < 800 * MiB; usage += 50 * MiB) {
        int64_t ms = balloon_headroom_interval_ms(cg, usage, limit);

        g_assert_cmpint(ms, <=, prev);
        g_assert_cmpint(ms, >=, BALLOON_HEADROOM_MIN_MS);
        /* 1 GiB/s cannot reach the first threshold before the next look */
        g_assert_cmpuint((uint64_t)ms * (BALLOON_HEADROOM_FAST_RATE / 1000),
                         <=, MAX(800 * MiB - usage,
                                 BALLOON_HEADROOM_MIN_MS *
                                 (BALLOON_HEADROOM_FAST_RATE / 1000)));
        prev = ms;
    }
    g_assert_cmpint(balloon_headroom_interval_ms(cg, 850 * MiB, limit), ==,
                    BALLOON_HEADROOM_BUSY_MS);
}

static void test_parse_own(void)
{
    static const char hybrid[] =
        "12:memory:/machine/qemu-1-vm.libvirt-qemu\n"
        "11:cpu,cpuacct:/machine/qemu-1-vm.libvirt-qemu/emulator\n"
        "1:name=systemd:/\n"
        "0::/machine.slice/machine-qemu\\x2d1\\x2dvm.scope/libvirt/emulator\n";
    g_autofree char *v1 = balloon_cgroup_parse_own(hybrid, "memory");
    g_autofree char *cpu = balloon_cgroup_parse_own(hybrid, "cpu");
    g_autofree char *v2 = balloon_cgroup_parse_own(hybrid, NULL);
    g_autofree char *none = balloon_cgroup_parse_own("0::/\n", "memory");

    g_assert_cmpstr(v1, ==, "/machine/qemu-1-vm.libvirt-qemu");
    g_assert_cmpstr(cpu, ==, "/machine/qemu-1-vm.libvirt-qemu/emulator");
    g_assert_cmpstr(v2, ==,
                    "/machine.slice/machine-qemu\\x2d1\\x2dvm.scope/libvirt/"
                    "emulator");
    g_assert_null(none);
}

/*
 * libvirt puts QEMU's threads in threaded children: the VM-level cgroup
 * is the root of the threaded subtree (with systemd: the scope's libvirt/
 * child, where libvirt writes the limits; without: the domain directory).
 */
static void test_libvirt_layouts(void)
{
    static const struct {
        const char *qemu;       /* where QEMU's main thread is */
        const char *vm;         /* the VM-level cgroup */
    } layouts[] = {
        { "machine.slice/machine-qemu\\x2d1\\x2dvm.scope/libvirt/emulator",
          "machine.slice/machine-qemu\\x2d1\\x2dvm.scope/libvirt" },
        { "machine.slice/machine-qemu\\x2d1\\x2dvm.scope/libvirt/vcpu0",
          "machine.slice/machine-qemu\\x2d1\\x2dvm.scope/libvirt" },
        { "machine/qemu-2-db.libvirt-qemu/emulator",
          "machine/qemu-2-db.libvirt-qemu" },
        { "system.slice/qemu.service", "system.slice/qemu.service" },
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(layouts); i++) {
        FakeTree t;
        g_autofree char *qemu = NULL;
        g_autofree char *vm = NULL;
        g_autofree char *found = NULL;

        fake_init(&t);
        vm = fake_mkdir(&t, layouts[i].vm);
        fake_write(vm, "cgroup.type", "domain threaded\n");
        qemu = fake_mkdir(&t, layouts[i].qemu);
        if (strcmp(layouts[i].qemu, layouts[i].vm)) {
            fake_write(qemu, "cgroup.type", "threaded\n");
        }
        found = balloon_cgroup_domain(qemu);
        g_assert_cmpstr(found, ==, vm);
        fake_destroy(&t);
    }
}

/* The limit in force is the lowest memory.max/high on the path. */
static void test_limit_along_path(void)
{
    FakeTree t;
    g_autofree char *a = NULL, *b = NULL, *c = NULL, *origin = NULL;
    g_autofree char *b_max = NULL;
    uint64_t limit = 0;

    fake_init(&t);
    a = fake_mkdir(&t, "machine.slice");
    b = fake_mkdir(&t, "machine.slice/vm.scope");
    c = fake_mkdir(&t, "machine.slice/vm.scope/libvirt");
    /* the root's files do not count (it has none in reality) */
    fake_write(t.mnt, "memory.max", "1048576\n");
    fake_write(a, "memory.max", "max\n");
    fake_write(a, "memory.high", "2147483648\n");
    fake_write(c, "memory.max", "max\n");
    fake_write(c, "memory.high", "max\n");
    g_assert_true(balloon_cgroup_v2_limit(t.mnt, c, &limit, &origin));
    g_assert_cmpuint(limit, ==, 2 * GiB);
    g_assert_true(g_str_has_suffix(origin, "machine.slice/memory.high"));

    g_clear_pointer(&origin, g_free);
    fake_write(b, "memory.max", "1073741824\n");
    g_assert_true(balloon_cgroup_v2_limit(t.mnt, c, &limit, &origin));
    g_assert_cmpuint(limit, ==, 1 * GiB);
    b_max = g_build_filename(b, "memory.max", NULL);
    g_assert_cmpstr(origin, ==, b_max);

    g_clear_pointer(&origin, g_free);
    fake_write(c, "memory.high", "536870912\n");
    g_assert_true(balloon_cgroup_v2_limit(t.mnt, c, &limit, &origin));
    g_assert_cmpuint(limit, ==, 512 * MiB);

    /* nothing on the path */
    g_clear_pointer(&origin, g_free);
    fake_write(a, "memory.high", "max\n");
    fake_write(b, "memory.max", "max\n");
    fake_write(c, "memory.high", "max\n");
    g_assert_false(balloon_cgroup_v2_limit(t.mnt, c, &limit, &origin));
    fake_destroy(&t);
}

/* Protections: the VM's own, no more than a protected ancestor has. */
static void test_protection(void)
{
    FakeTree t;
    g_autofree char *a = NULL, *b = NULL, *origin = NULL;

    fake_init(&t);
    a = fake_mkdir(&t, "machine.slice");
    b = fake_mkdir(&t, "machine.slice/vm");
    g_assert_cmpuint(balloon_cgroup_v2_protection(t.mnt, b, &origin), ==, 0);
    g_assert_null(origin);
    fake_write(b, "memory.min", "0\n");
    fake_write(b, "memory.low", "536870912\n");
    fake_write(a, "memory.low", "0\n");
    g_assert_cmpuint(balloon_cgroup_v2_protection(t.mnt, b, &origin), ==,
                     512 * MiB);
    g_assert_true(g_str_has_suffix(origin, "vm/memory.low"));
    g_clear_pointer(&origin, g_free);
    fake_write(b, "memory.min", "805306368\n");
    g_assert_cmpuint(balloon_cgroup_v2_protection(t.mnt, b, &origin), ==,
                     768 * MiB);
    g_clear_pointer(&origin, g_free);
    fake_write(a, "memory.low", "268435456\n");
    g_assert_cmpuint(balloon_cgroup_v2_protection(t.mnt, b, &origin), ==,
                     256 * MiB);
    g_assert_true(g_str_has_suffix(origin, "machine.slice/memory.low"));
    fake_destroy(&t);
}

static void test_parse_events(void)
{
    BalloonCgroupEvents ev;

    g_assert_true(balloon_cgroup_parse_events(
        "low 1\nhigh 22\nmax 333\noom 4\noom_kill 5\noom_group_kill 0\n",
        &ev));
    g_assert_cmpuint(ev.low, ==, 1);
    g_assert_cmpuint(ev.high, ==, 22);
    g_assert_cmpuint(ev.max, ==, 333);
    g_assert_cmpuint(ev.oom, ==, 4);
    g_assert_cmpuint(ev.oom_kill, ==, 5);
    g_assert_false(balloon_cgroup_parse_events("some avg10=0.00\n", &ev));
    g_assert_false(balloon_cgroup_parse_events("", &ev));
}

static void test_read_value(void)
{
    FakeTree t;
    uint64_t v = 0;

    fake_init(&t);
    fake_write(t.mnt, "memory.max", "max\n");
    fake_write(t.mnt, "memory.limit_in_bytes", "9223372036854771712\n");
    fake_write(t.mnt, "memory.low", "0\n");
    fake_write(t.mnt, "memory.high", "12345678\n");
    fake_write(t.mnt, "bogus", "12abc\n");
    g_assert_false(balloon_cgroup_read_value(t.mnt, "memory.max", &v));
    g_assert_false(balloon_cgroup_read_value(t.mnt, "memory.limit_in_bytes",
                                             &v));
    g_assert_false(balloon_cgroup_read_value(t.mnt, "memory.low", &v));
    g_assert_false(balloon_cgroup_read_value(t.mnt, "bogus", &v));
    g_assert_false(balloon_cgroup_read_value(t.mnt, "absent", &v));
    g_assert_true(balloon_cgroup_read_value(t.mnt, "memory.high", &v));
    g_assert_cmpuint(v, ==, 12345678);
    fake_destroy(&t);
}

/*
 * The cgroup v2 source on a real cgroup v2 host: a child allocates in a
 * cgroup with memory.max; the source reports the levels as usage nears the
 * limit, the headroom it read, the limit's events, and the removal.
 */

typedef struct Seen {
    uint64_t events[BALLOON_POLICY_LEVEL__MAX];
    bool lost;
    BalloonPressure *bp;
} Seen;

static void record(void *opaque, BalloonPolicyLevel level, const char *src)
{
    Seen *seen = opaque;

    if (level == BALLOON_POLICY_LEVEL_NONE) {
        seen->lost = true;
    } else {
        seen->events[level]++;
    }
}

/* A writable cgroup v2 hierarchy with the memory controller, or NULL. */
static char *v2_memory_root(void)
{
    g_autofree char *ctrl = NULL;

    if (!g_file_get_contents("/sys/fs/cgroup/cgroup.subtree_control", &ctrl,
                             NULL, NULL) || !strstr(ctrl, "memory") ||
        access("/sys/fs/cgroup/cgroup.procs", W_OK) != 0) {
        return NULL;
    }
    return g_strdup("/sys/fs/cgroup");
}

static void write_file(const char *dir, const char *file, const char *val)
{
    g_autofree char *path = g_build_filename(dir, file, NULL);
    int fd = open(path, O_WRONLY);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(write(fd, val, strlen(val)), ==, strlen(val));
    close(fd);
}

/* A child in @dir that takes @step_mib MiB every @ms until @total_mib. */
static pid_t start_hog(const char *dir, int step_mib, int ms, int total_mib)
{
    pid_t pid = fork();

    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        g_autofree char *me = g_strdup_printf("%d", getpid());
        int done;

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        write_file(dir, "cgroup.procs", me);
        for (done = 0; done < total_mib; done += step_mib) {
            void *m = mmap(NULL, step_mib * MiB, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

            g_assert(m != MAP_FAILED);
            g_usleep(ms * 1000);
        }
        for (;;) {
            pause();
        }
    }
    return pid;
}

static void run_main_loop_until(bool (*done)(Seen *), Seen *seen,
                                int64_t timeout_ms)
{
    int64_t end = g_get_monotonic_time() + timeout_ms * 1000;

    while (!done(seen) && g_get_monotonic_time() < end) {
        main_loop_wait(false);
    }
}

static bool saw_critical(Seen *seen)
{
    return seen->events[BALLOON_POLICY_LEVEL_CRITICAL] > 0;
}

static bool saw_lost(Seen *seen)
{
    return seen->lost;
}

static bool saw_no_limit(Seen *seen)
{
    BalloonPressureReading r;

    return !balloon_pressure_headroom(seen->bp, &r);
}

static void test_v2_source(void)
{
    g_autofree char *root = v2_memory_root();
    g_autofree char *dir = NULL;
    g_autofree char *path = NULL, *detail = NULL;
    BalloonPressureConfig cfg = {
        .kind = BALLOON_PRESSURE_CGROUP_V2,
        .psi_window_ms = 1000,
    };
    BalloonPressure *bp;
    Seen seen = { 0 };
    BalloonPressureReading reading;
    pid_t hog;
    int l;

    if (!root) {
        g_test_skip("no writable cgroup v2 hierarchy with the memory "
                    "controller (a cgroup v1 host)");
        return;
    }
    dir = g_strdup_printf("%s/test-balloon-pressure-%d", root, getpid());
    g_assert_cmpint(mkdir(dir, 0755), ==, 0);
    write_file(dir, "memory.max", "67108864");
    cfg.cgroup = dir;
    bp = balloon_pressure_open(&cfg, record, &seen, &error_abort);
    seen.bp = bp;
    path = balloon_pressure_path(bp);
    detail = balloon_pressure_detail(bp);
    g_test_message("source %s: %s", path, detail);
    g_assert_cmpint(balloon_pressure_kind(bp), ==, BALLOON_PRESSURE_CGROUP_V2);
    g_assert_cmpstr(path, ==, dir);
    g_assert_nonnull(strstr(detail, "64 MiB limit"));
    g_assert_true(balloon_pressure_headroom(bp, &reading));
    g_assert_cmpuint(reading.limit, ==, 64 * MiB);
    g_assert_cmpuint(reading.usage, <, 8 * MiB);

    /* 2 MiB every 50 ms up to 70 MiB: through the thresholds to the limit */
    hog = start_hog(dir, 2, 50, 70);
    run_main_loop_until(saw_critical, &seen, 30000);
    for (l = BALLOON_POLICY_LEVEL_LOW; l < BALLOON_POLICY_LEVEL__MAX; l++) {
        g_test_message("%s: %" PRIu64 " events",
                       balloon_policy_level_name(l), seen.events[l]);
    }
    g_assert_cmpuint(seen.events[BALLOON_POLICY_LEVEL_LOW], >, 0);
    g_assert_cmpuint(seen.events[BALLOON_POLICY_LEVEL_CRITICAL], >, 0);
    g_assert_true(balloon_pressure_headroom(bp, &reading));
    g_test_message("usage %" PRIu64 " MiB of %" PRIu64 " MiB",
                   reading.usage / MiB, reading.limit / MiB);
    g_assert_cmpuint(reading.usage, >=, 48 * MiB);

    /* the limit is removed: no headroom against a limit that is gone */
    write_file(dir, "memory.max", "max");
    run_main_loop_until(saw_no_limit, &seen, 5000);
    g_assert_false(balloon_pressure_headroom(bp, &reading));

    /* gone: the source says so and stops */
    kill(hog, SIGKILL);
    waitpid(hog, NULL, 0);
    while (rmdir(dir) < 0 && errno == EBUSY) {
        g_usleep(10 * 1000);
    }
    run_main_loop_until(saw_lost, &seen, 15000);
    g_assert_true(seen.lost);
    g_assert_true(balloon_pressure_lost(bp));
    g_assert_false(balloon_pressure_headroom(bp, &reading));
    balloon_pressure_close(bp);
}

/*
 * The cgroup v2 source on a fake tree: a fake /proc whose mounts list the
 * tree as the cgroup2 hierarchy, and plain files for a cgroup's memory
 * files, so that what the kernel never does (a garbled reading) and what
 * management rarely does (removing a limit) can be tried here.
 */
typedef struct FakeV2 {
    FakeTree t;
    char *proc;
    char *cg;                   /* the VM's cgroup */
    BalloonPressure *bp;
    Seen seen;
} FakeV2;

static void fake_v2_open(FakeV2 *f, const char *usage, const char *max)
{
    g_autofree char *self = NULL;
    g_autofree char *mounts = NULL;
    BalloonPressureConfig cfg = {
        .kind = BALLOON_PRESSURE_CGROUP_V2,
        .psi_window_ms = 1000,
    };

    fake_init(&f->t);
    f->proc = fake_mkdir(&f->t, "proc");
    self = fake_mkdir(&f->t, "proc/self");
    f->cg = fake_mkdir(&f->t, "cgroup/machine.slice/vm.scope");
    mounts = g_strdup_printf("cgroup2 %s/cgroup cgroup2 rw 0 0\n",
                             f->t.mnt);
    fake_write(self, "mounts", mounts);
    fake_write(self, "cgroup", "0::/machine.slice/vm.scope\n");
    fake_write(f->cg, "memory.pressure", "");
    fake_write(f->cg, "memory.events",
               "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n");
    fake_write(f->cg, "memory.current", usage);
    fake_write(f->cg, "memory.max", max);
    memset(&f->seen, 0, sizeof(f->seen));
    cfg.proc = f->proc;
    cfg.cgroup = f->cg;
    f->bp = balloon_pressure_open(&cfg, record, &f->seen, &error_abort);
}

static void fake_v2_close(FakeV2 *f)
{
    balloon_pressure_close(f->bp);
    g_free(f->proc);
    g_free(f->cg);
    fake_destroy(&f->t);
}

/* Rewrite a file the source holds open (fake_write() replaces it). */
static void fake_rewrite(const char *dir, const char *file, const char *text)
{
    g_autofree char *path = g_build_filename(dir, file, NULL);
    int fd = open(path, O_WRONLY | O_TRUNC);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(write(fd, text, strlen(text)), ==, strlen(text));
    close(fd);
}

/* Run the main loop for @ms. */
static void run_main_loop_for(int64_t ms)
{
    int64_t end = g_get_monotonic_time() + ms * 1000;

    while (g_get_monotonic_time() < end) {
        main_loop_wait(true);
        g_usleep(10 * 1000);
    }
}

/*
 * The protection the floor comes from is read again when the source
 * restarts (automatic ballooning off and on) and when management asks
 * (balloon-auto-set): libvirt may write it after QEMU started.
 */
static void test_protection_read_again(void)
{
    FakeV2 f;
    const char *origin;
    BalloonPressureConfig cfg = {
        .kind = BALLOON_PRESSURE_CGROUP_V2,
        .psi_window_ms = 1000,
    };

    fake_v2_open(&f, "0\n", "max\n");
    g_assert_cmpuint(balloon_pressure_protection(f.bp, &origin), ==, 0);
    fake_write(f.cg, "memory.low", "268435456\n");
    g_assert_cmpuint(balloon_pressure_protection(f.bp, &origin), ==, 0);
    balloon_pressure_read_protection(f.bp);
    g_assert_cmpuint(balloon_pressure_protection(f.bp, &origin), ==,
                     256 * MiB);
    g_assert_true(g_str_has_suffix(origin, "vm.scope/memory.low"));

    fake_write(f.cg, "memory.low", "134217728\n");
    balloon_pressure_stop(f.bp);
    cfg.proc = f.proc;
    cfg.cgroup = f.cg;
    g_assert_true(balloon_pressure_restart(f.bp, &cfg, &error_abort));
    g_assert_cmpuint(balloon_pressure_protection(f.bp, &origin), ==,
                     128 * MiB);
    fake_v2_close(&f);
}

/*
 * Management removes the limit (writes "max"): the old limit no longer
 * counts, or usage above 80% of a limit that is gone would inflate the
 * guest to its floor.  A new limit counts again.
 */
static void test_v2_limit_removed(void)
{
    FakeV2 f;
    BalloonPressureReading r;
    g_autofree char *detail = NULL;

    /* 850 of 1000 MiB: above the first threshold */
    fake_v2_open(&f, "891289600\n", "1048576000\n");
    g_assert_true(balloon_pressure_headroom(f.bp, &r));
    g_assert_cmpuint(r.limit, ==, 1000 * MiB);
    g_assert_cmpuint(f.seen.events[BALLOON_POLICY_LEVEL_LOW], >, 0);
    fake_write(f.cg, "memory.max", "max\n");
    run_main_loop_for(600);
    detail = balloon_pressure_detail(f.bp);
    g_test_message("%s", detail);
    g_assert_false(balloon_pressure_headroom(f.bp, &r));
    g_assert_nonnull(strstr(detail, "limit removed"));
    g_assert_false(balloon_pressure_lost(f.bp));
    fake_write(f.cg, "memory.max", "2097152000\n");
    run_main_loop_for(10500);
    g_assert_true(balloon_pressure_headroom(f.bp, &r));
    g_assert_cmpuint(r.limit, ==, 2000 * MiB);
    fake_v2_close(&f);
}

/*
 * A reading that is not a number is skipped and the next one comes (it
 * stopped polling for good); one that stays garbled loses the source,
 * which says why.
 */
static void test_v2_garbled_usage(void)
{
    FakeV2 f;
    BalloonPressureReading r;
    g_autofree char *detail = NULL;
    uint64_t count;

    fake_v2_open(&f, "891289600\n", "1048576000\n");
    g_assert_true(balloon_pressure_headroom(f.bp, &r));
    fake_rewrite(f.cg, "memory.current", "garbage\n");
    run_main_loop_for(300);
    g_assert_true(balloon_pressure_headroom(f.bp, &r));
    g_assert_cmpuint(r.usage, ==, 891289600);
    count = r.count;
    fake_rewrite(f.cg, "memory.current", "901289600\n");
    run_main_loop_for(600);
    g_assert_true(balloon_pressure_headroom(f.bp, &r));
    g_assert_cmpuint(r.count, >, count);
    g_assert_cmpuint(r.usage, ==, 901289600);

    fake_rewrite(f.cg, "memory.current", "12ab\n");
    run_main_loop_for(1500);
    detail = balloon_pressure_detail(f.bp);
    g_test_message("%s", detail);
    g_assert_true(f.seen.lost);
    g_assert_true(balloon_pressure_lost(f.bp));
    g_assert_nonnull(strstr(detail, "'12ab'"));
    fake_v2_close(&f);
}

static void test_parse_meminfo(void)
{
    static const char good[] =
        "MemTotal:        1004500 kB\n"
        "MemFree:          100000 kB\n"
        "MemAvailable:     250000 kB\n"
        "Buffers:            1000 kB\n";
    uint64_t total, avail;

    g_assert_true(balloon_headroom_parse_meminfo(good, &total, &avail));
    g_assert_cmpuint(total, ==, 1004500 * KiB);
    g_assert_cmpuint(avail, ==, 250000 * KiB);
    /* what a short read, another file or garbage looks like */
    g_assert_false(balloon_headroom_parse_meminfo("MemTotal:  1004500 kB\n",
                                                  &total, &avail));
    g_assert_false(balloon_headroom_parse_meminfo(
        "MemTotal: 1004500 kB\nMemAvailable: 12x kB\n", &total, &avail));
    g_assert_false(balloon_headroom_parse_meminfo(
        "MemTotal: 99999999999999999999 kB\nMemAvailable: 1 kB\n", &total,
        &avail));
    g_assert_false(balloon_headroom_parse_meminfo(
        "MemTotal: 0 kB\nMemAvailable: 0 kB\n", &total, &avail));
    g_assert_false(balloon_headroom_parse_meminfo("", &total, &avail));
    g_assert_false(balloon_headroom_parse_meminfo(
        "MemTotalX: 1 kB\nMemAvailable: 1 kB\n", &total, &avail));
}

/* The host's own memory, from a fake /proc. */
typedef struct FakeHost {
    FakeTree t;
    char *proc;
    BalloonPressure *bp;
    Seen seen;
} FakeHost;

static char *meminfo_text(uint64_t total_mib, uint64_t avail_mib)
{
    return g_strdup_printf("MemTotal:       %" PRIu64 " kB\n"
                           "MemFree:        1000 kB\n"
                           "MemAvailable:   %" PRIu64 " kB\n",
                           total_mib * 1024, avail_mib * 1024);
}

/* The source on a fake /proc whose meminfo says @meminfo (NULL: none). */
static BalloonPressure *fake_host_open(FakeHost *f, const char *meminfo,
                                       Error **errp)
{
    BalloonPressureConfig cfg = {
        .kind = BALLOON_PRESSURE_HOST,
        .psi_window_ms = 2000,
        .host_setpoint_pct = 80,
    };
    g_autofree char *pressure = NULL;

    fake_init(&f->t);
    f->proc = fake_mkdir(&f->t, "proc");
    g_free(fake_mkdir(&f->t, "proc/self"));
    pressure = fake_mkdir(&f->t, "proc/pressure");
    fake_write(pressure, "memory", "");
    if (meminfo) {
        fake_write(f->proc, "meminfo", meminfo);
    }
    memset(&f->seen, 0, sizeof(f->seen));
    cfg.proc = f->proc;
    f->bp = balloon_pressure_open(&cfg, record, &f->seen, errp);
    return f->bp;
}

static void fake_host_close(FakeHost *f)
{
    balloon_pressure_close(f->bp);
    g_free(f->proc);
    fake_destroy(&f->t);
}

/*
 * The host's memory in use (MemTotal - MemAvailable) against its
 * setpoint: the levels at 80, 85 and 90%, the setpoint in the reading, a
 * new setpoint at run time.
 */
static void test_host_source(void)
{
    FakeHost f;
    BalloonPressureReading r;
    g_autofree char *detail = NULL;
    g_autofree char *half = meminfo_text(1000, 500);
    g_autofree char *busy = meminfo_text(1000, 140);

    g_assert_nonnull(fake_host_open(&f, half, &error_abort));
    detail = balloon_pressure_detail(f.bp);
    g_test_message("%s", detail);
    g_assert_cmpint(balloon_pressure_kind(f.bp), ==, BALLOON_PRESSURE_HOST);
    g_assert_nonnull(strstr(detail, "80/85/90% of the 1000 MiB MemTotal"));
    g_assert_true(balloon_pressure_headroom(f.bp, &r));
    g_assert_cmpuint(r.usage, ==, 500 * MiB);
    g_assert_cmpuint(r.limit, ==, 1000 * MiB);
    g_assert_cmpuint(r.setpoint, ==, 800 * MiB);
    g_assert_cmpuint(f.seen.events[BALLOON_POLICY_LEVEL_LOW], ==, 0);

    /* 860 MiB in use: past the setpoint and +5% */
    fake_rewrite(f.proc, "meminfo", busy);
    run_main_loop_for(600);
    g_assert_true(balloon_pressure_headroom(f.bp, &r));
    g_assert_cmpuint(r.usage, ==, 860 * MiB);
    g_assert_cmpuint(f.seen.events[BALLOON_POLICY_LEVEL_MEDIUM], >, 0);
    g_assert_cmpuint(f.seen.events[BALLOON_POLICY_LEVEL_CRITICAL], ==, 0);

    /* the setpoint at 90%: 860 MiB in use is no pressure any more */
    balloon_pressure_set_host_setpoint(f.bp, 90);
    memset(&f.seen, 0, sizeof(f.seen));
    run_main_loop_for(600);
    g_assert_true(balloon_pressure_headroom(f.bp, &r));
    g_assert_cmpuint(r.setpoint, ==, 900 * MiB);
    g_assert_cmpuint(f.seen.events[BALLOON_POLICY_LEVEL_LOW], ==, 0);
    fake_host_close(&f);
}

/*
 * /proc/meminfo that cannot be read, reads short or garbled: opening the
 * source says why; a running source that reads garbage is lost with the
 * reason, and nothing else happens.
 */
static void test_host_bad_meminfo(void)
{
    static const char *const bad[] = {
        NULL, "", "MemTotal:       1024000 kB\nMemFr",
        "MemTotal: 1024000 kB\nMemAvailable: lots kB\n",
    };
    g_autofree char *half = meminfo_text(1000, 500);
    g_autofree char *detail = NULL;
    FakeHost f;
    size_t i;

    for (i = 0; i < ARRAY_SIZE(bad); i++) {
        Error *err = NULL;

        g_assert_null(fake_host_open(&f, bad[i], &err));
        g_test_message("%s -> %s", bad[i] ?: "(none)",
                       error_get_pretty(err));
        g_assert_nonnull(strstr(error_get_pretty(err), "meminfo"));
        error_free(err);
        g_free(f.proc);
        fake_destroy(&f.t);
    }

    g_assert_nonnull(fake_host_open(&f, half, &error_abort));
    fake_rewrite(f.proc, "meminfo", bad[2]);
    run_main_loop_for(2000);
    detail = balloon_pressure_detail(f.bp);
    g_test_message("short read: %s", detail);
    g_assert_true(f.seen.lost);
    g_assert_true(balloon_pressure_lost(f.bp));
    g_assert_nonnull(strstr(detail, "lost: /proc/meminfo has no MemTotal "
                            "and MemAvailable"));
    fake_host_close(&f);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    qemu_init_main_loop(&error_abort);
    g_test_add_func("/balloon-headroom/levels-and-cadence", test_headroom);
    g_test_add_func("/balloon-cgroup/parse-own", test_parse_own);
    g_test_add_func("/balloon-cgroup/libvirt-layouts", test_libvirt_layouts);
    g_test_add_func("/balloon-cgroup/limit-along-path",
                    test_limit_along_path);
    g_test_add_func("/balloon-cgroup/protection", test_protection);
    g_test_add_func("/balloon-pressure/protection-read-again",
                    test_protection_read_again);
    g_test_add_func("/balloon-cgroup/parse-events", test_parse_events);
    g_test_add_func("/balloon-cgroup/read-value", test_read_value);
    g_test_add_func("/balloon-pressure/v2-source", test_v2_source);
    g_test_add_func("/balloon-pressure/v2-limit-removed",
                    test_v2_limit_removed);
    g_test_add_func("/balloon-pressure/v2-garbled-usage",
                    test_v2_garbled_usage);
    g_test_add_func("/balloon-headroom/parse-meminfo", test_parse_meminfo);
    g_test_add_func("/balloon-pressure/host-source", test_host_source);
    g_test_add_func("/balloon-pressure/host-bad-meminfo",
                    test_host_bad_meminfo);
    return g_test_run();
}
