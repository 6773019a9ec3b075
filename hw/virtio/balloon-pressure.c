/*
 * Automatic virtio-balloon: host memory-pressure sources
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <mntent.h>
#include <sys/eventfd.h>
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/cutils.h"
#include "qemu/ctype.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "monitor/monitor.h"
#include "hw/virtio/balloon-pressure.h"
#include "trace.h"

#define PROC_PSI_MEMORY "/proc/pressure/memory"

/*
 * PSI triggers, mildest first: stall time (us) per window.  "some" means
 * at least one task stalled on memory, "full" that all did.
 */
static const struct {
    BalloonPolicyLevel level;
    const char *type;
    uint32_t stall_permille;    /* of the window */
} psi_triggers[] = {
    { BALLOON_POLICY_LEVEL_LOW, "some", 50 },
    { BALLOON_POLICY_LEVEL_MEDIUM, "some", 150 },
    { BALLOON_POLICY_LEVEL_CRITICAL, "full", 150 },
};

static const char *const v1_levels[] = {
    [BALLOON_POLICY_LEVEL_LOW] = "low",
    [BALLOON_POLICY_LEVEL_MEDIUM] = "medium",
    [BALLOON_POLICY_LEVEL_CRITICAL] = "critical",
};

static const char *const kind_names[BALLOON_PRESSURE__MAX] = {
    [BALLOON_PRESSURE_AUTO] = "auto",
    [BALLOON_PRESSURE_CGROUP_V1] = "cgroup-v1",
    [BALLOON_PRESSURE_CGROUP_V2] = "cgroup-v2",
    [BALLOON_PRESSURE_SYSTEM] = "system",
    [BALLOON_PRESSURE_FD] = "fd",
    [BALLOON_PRESSURE_NONE] = "none",
};

typedef struct PressureWatch {
    BalloonPressure *bp;
    BalloonPolicyLevel level;
    int fd;                     /* eventfd or PSI trigger fd */
    int level_fd;               /* v1: memory.pressure_level, else -1 */
    bool is_eventfd;
    guint source;               /* PSI: GSource id polling G_IO_PRI */
} PressureWatch;

/*
 * cgroup v1 headroom: without swap or page cache to reclaim, the kernel
 * OOM-kills before memory.pressure_level says anything.  Usage thresholds
 * close to the limit give the warning instead; while usage stays above
 * one, its level is reported again every HEADROOM_REPEAT_MS.
 */
#define HEADROOM_REPEAT_MS 1000

static const struct {
    BalloonPolicyLevel level;
    uint32_t permille;          /* of memory.limit_in_bytes */
} headroom_thresholds[] = {
    { BALLOON_POLICY_LEVEL_LOW, 800 },
    { BALLOON_POLICY_LEVEL_MEDIUM, 900 },
    { BALLOON_POLICY_LEVEL_CRITICAL, 950 },
};

struct BalloonPressure {
    BalloonPressureKind kind;
    char *path;
    char *detail;
    bool lost;
    PressureWatch watch[BALLOON_POLICY_LEVEL__MAX];
    int nwatch;
    int usage_fd;               /* v1 memory.usage_in_bytes, or -1 */
    int headroom_efd;           /* eventfd of the usage thresholds, or -1 */
    uint64_t limit;
    QEMUTimer *headroom_timer;
    BalloonPressureHandler *handler;
    void *opaque;
};

const char *balloon_pressure_kind_name(BalloonPressureKind kind)
{
    return kind < BALLOON_PRESSURE__MAX ? kind_names[kind] : "?";
}

int balloon_pressure_kind_parse(const char *name)
{
    int i;

    for (i = 0; i < BALLOON_PRESSURE__MAX; i++) {
        if (!strcmp(name, kind_names[i])) {
            return i;
        }
    }
    return -1;
}

BalloonPressureKind balloon_pressure_kind(const BalloonPressure *bp)
{
    return bp->kind;
}

const char *balloon_pressure_path(const BalloonPressure *bp)
{
    return bp->path ? bp->path : "";
}

const char *balloon_pressure_detail(const BalloonPressure *bp)
{
    return bp->detail ? bp->detail : "";
}

bool balloon_pressure_lost(const BalloonPressure *bp)
{
    return bp->lost;
}

/*
 * Where a cgroup hierarchy is mounted: v2 (@v1_controller NULL) or the
 * v1 hierarchy holding @v1_controller.
 */
static char *cgroup_mount(const char *v1_controller, Error **errp)
{
    FILE *f = setmntent("/proc/self/mounts", "r");
    struct mntent *m;
    char *dir = NULL;

    if (!f) {
        error_setg_errno(errp, errno, "cannot read /proc/self/mounts");
        return NULL;
    }
    while ((m = getmntent(f))) {
        if (v1_controller ? !strcmp(m->mnt_type, "cgroup") &&
                            hasmntopt(m, v1_controller)
                          : !strcmp(m->mnt_type, "cgroup2")) {
            dir = g_strdup(m->mnt_dir);
            break;
        }
    }
    endmntent(f);
    if (!dir) {
        error_setg(errp, "no cgroup %s hierarchy is mounted",
                   v1_controller ? "v1 memory" : "v2");
    }
    return dir;
}

/* QEMU's own cgroup path in the v2 hierarchy or a v1 controller's. */
static char *own_cgroup(const char *v1_controller)
{
    g_autofree char *content = NULL;
    g_auto(GStrv) lines = NULL;
    int i;

    if (!g_file_get_contents("/proc/self/cgroup", &content, NULL, NULL)) {
        return NULL;
    }
    lines = g_strsplit(content, "\n", -1);
    for (i = 0; lines[i]; i++) {
        g_auto(GStrv) f = g_strsplit(lines[i], ":", 3);

        if (g_strv_length(f) != 3) {
            continue;
        }
        if (v1_controller) {
            g_auto(GStrv) ctrls = g_strsplit(f[1], ",", -1);

            if (g_strv_contains((const char * const *)ctrls, v1_controller)) {
                return g_strdup(f[2]);
            }
        } else if (!strcmp(f[0], "0") && !f[1][0]) {
            return g_strdup(f[2]);
        }
    }
    return NULL;
}

/*
 * A threaded cgroup (libvirt puts QEMU's emulator threads in one) has no
 * memory limit or protection of its own, and its PSI misses the VM's other
 * threads: use the root of the threaded subtree, the VM's cgroup.
 */
static char *threaded_domain(char *dir)
{
    for (;;) {
        g_autofree char *file = g_build_filename(dir, "cgroup.type", NULL);
        g_autofree char *type = NULL;
        char *parent;

        if (!g_file_get_contents(file, &type, NULL, NULL) ||
            strcmp(g_strstrip(type), "threaded")) {
            return dir;
        }
        parent = g_path_get_dirname(dir);
        g_free(dir);
        dir = parent;
    }
}

/*
 * The directory of the cgroup to watch: @given as a directory, or as a
 * path inside the hierarchy, or QEMU's own cgroup when @given is NULL.
 * Sets *is_root when that is the hierarchy's root.
 */
static char *cgroup_dir(const char *v1_controller, const char *given,
                        bool *is_root, Error **errp)
{
    g_autofree char *mounted = cgroup_mount(v1_controller, errp);
    g_autofree char *mnt = NULL;
    g_autofree char *rel = NULL;
    g_autofree char *path = NULL;
    g_autofree char *real = NULL;

    if (!mounted) {
        return NULL;
    }
    mnt = realpath(mounted, NULL);
    if (!mnt) {
        error_setg_errno(errp, errno, "cannot resolve %s", mounted);
        return NULL;
    }
    if (given && g_str_has_prefix(given, mounted) &&
        g_file_test(given, G_FILE_TEST_IS_DIR)) {
        path = g_strdup(given);
    } else {
        rel = given ? g_strdup(given) : own_cgroup(v1_controller);
        if (!rel) {
            error_setg(errp, "cannot find QEMU's own %s cgroup in "
                       "/proc/self/cgroup",
                       v1_controller ? "v1 memory" : "v2");
            return NULL;
        }
        path = g_build_filename(mnt, rel, NULL);
    }
    /*
     * Only cgroup directories: ".." or a link could lead elsewhere, where
     * a FIFO named like a cgroup file would block QEMU for ever.
     */
    real = realpath(path, NULL);
    if (!real || !g_file_test(real, G_FILE_TEST_IS_DIR) ||
        !(g_str_equal(real, mnt) ||
          (g_str_has_prefix(real, mnt) && real[strlen(mnt)] == '/'))) {
        error_setg(errp, "%s is not a cgroup directory under %s", path, mnt);
        return NULL;
    }
    *is_root = g_str_equal(real, mnt);
    return given ? g_steal_pointer(&real) :
                   threaded_domain(g_steal_pointer(&real));
}

/* Whether the v2 hierarchy has the memory controller (not a v1 one). */
static bool v2_has_memory_controller(void)
{
    g_autofree char *mnt = cgroup_mount(NULL, NULL);
    g_autofree char *path = NULL;
    g_autofree char *text = NULL;
    g_auto(GStrv) ctrls = NULL;

    if (!mnt) {
        return false;
    }
    path = g_build_filename(mnt, "cgroup.controllers", NULL);
    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        return false;
    }
    ctrls = g_strsplit_set(g_strstrip(text), " ", -1);
    return g_strv_contains((const char * const *)ctrls, "memory");
}

/* A cgroup memory file's value; false if absent, "max" or unlimited. */
static bool read_limit(const char *dir, const char *name, uint64_t *val)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_autofree char *text = NULL;

    if (!g_file_get_contents(path, &text, NULL, NULL) ||
        qemu_strtou64(g_strstrip(text), NULL, 10, val) < 0) {
        return false;
    }
    /* v1 reports "unlimited" as a page-rounded LLONG_MAX */
    return *val && *val < (1ULL << 62);
}

uint64_t balloon_cgroup_protection(char **origin)
{
    static const struct {
        const char *controller;     /* NULL: v2 */
        const char *file;
    } sources[] = {
        { NULL, "memory.min" },
        { NULL, "memory.low" },
        { "memory", "memory.soft_limit_in_bytes" },
    };
    uint64_t best = 0;
    size_t i;

    *origin = NULL;
    for (i = 0; i < ARRAY_SIZE(sources); i++) {
        g_autofree char *dir = NULL;
        bool is_root;
        uint64_t v;

        dir = cgroup_dir(sources[i].controller, NULL, &is_root, NULL);
        if (dir && !is_root && read_limit(dir, sources[i].file, &v) &&
            v > best) {
            best = v;
            g_free(*origin);
            *origin = g_build_filename(dir, sources[i].file, NULL);
        }
    }
    return best;
}

/* Add "; <what>" to the detail. */
static void G_GNUC_PRINTF(2, 3) append_detail(BalloonPressure *bp,
                                              const char *fmt, ...)
{
    g_autofree char *what = NULL;
    char *old = bp->detail;
    va_list ap;

    va_start(ap, fmt);
    what = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    bp->detail = old ? g_strdup_printf("%s; %s", old, what) :
                       g_steal_pointer(&what);
    g_free(old);
}

static void watch_notify(PressureWatch *w)
{
    BalloonPressure *bp = w->bp;

    trace_balloon_pressure_event(balloon_pressure_kind_name(bp->kind),
                                 balloon_policy_level_name(w->level));
    bp->handler(bp->opaque, w->level);
}

static void pressure_lost(BalloonPressure *bp, const char *why)
{
    int i;

    if (bp->lost) {
        return;
    }
    bp->lost = true;
    warn_report("virtio-balloon: pressure source %s lost: %s; automatic "
                "ballooning continues on guest pressure only",
                bp->path, why);
    for (i = 0; i < bp->nwatch; i++) {
        PressureWatch *w = &bp->watch[i];

        if (w->source) {
            g_source_remove(w->source);
            w->source = 0;
        }
        if (w->is_eventfd && w->fd >= 0) {
            qemu_set_fd_handler(w->fd, NULL, NULL, NULL);
        }
    }
    if (bp->headroom_efd >= 0) {
        qemu_set_fd_handler(bp->headroom_efd, NULL, NULL, NULL);
        timer_del(bp->headroom_timer);
    }
    bp->handler(bp->opaque, BALLOON_POLICY_LEVEL_NONE);
}

/* cgroup v1 eventfds, and eventfds handed over by management. */
static void eventfd_read_cb(void *opaque)
{
    PressureWatch *w = opaque;
    uint64_t count;
    ssize_t r = read(w->fd, &count, sizeof(count));

    if (r != sizeof(count)) {
        return;     /* spurious wake-up: EAGAIN */
    }
    /* v1 also signals the eventfd when the cgroup is removed. */
    if (w->level_fd >= 0) {
        g_autofree char *f = g_build_filename(w->bp->path,
                                              "memory.pressure_level", NULL);
        if (access(f, F_OK) != 0) {
            pressure_lost(w->bp, "cgroup removed");
            return;
        }
    }
    watch_notify(w);
}

/* PSI trigger fds signal POLLPRI and always poll readable: watch PRI. */
static gboolean psi_cb(gint fd, GIOCondition cond, gpointer opaque)
{
    PressureWatch *w = opaque;

    if (cond & (G_IO_ERR | G_IO_HUP | G_IO_NVAL)) {
        w->source = 0;
        pressure_lost(w->bp, "the pressure file reported an error "
                      "(cgroup removed?)");
        return G_SOURCE_REMOVE;
    }
    watch_notify(w);
    return G_SOURCE_CONTINUE;
}

static void watch_psi_fd(PressureWatch *w)
{
    w->source = g_unix_fd_add_full(G_PRIORITY_HIGH, w->fd,
                                   G_IO_PRI | G_IO_ERR | G_IO_HUP,
                                   psi_cb, w, NULL);
}

static PressureWatch *new_watch(BalloonPressure *bp, BalloonPolicyLevel level)
{
    PressureWatch *w = &bp->watch[bp->nwatch++];

    w->bp = bp;
    w->level = level;
    w->fd = -1;
    w->level_fd = -1;
    return w;
}

static void headroom_check(BalloonPressure *bp)
{
    char buf[32];
    ssize_t n = pread(bp->usage_fd, buf, sizeof(buf) - 1, 0);
    BalloonPolicyLevel level = BALLOON_POLICY_LEVEL_NONE;
    uint64_t usage;
    size_t i;

    if (n <= 0) {
        pressure_lost(bp, "cannot read memory.usage_in_bytes (cgroup "
                      "removed?)");
        return;
    }
    buf[n] = 0;
    if (qemu_strtou64(g_strstrip(buf), NULL, 10, &usage) < 0) {
        return;
    }
    for (i = 0; i < ARRAY_SIZE(headroom_thresholds); i++) {
        if (usage >= bp->limit / 1000 * headroom_thresholds[i].permille) {
            level = headroom_thresholds[i].level;
        }
    }
    if (level == BALLOON_POLICY_LEVEL_NONE) {
        timer_del(bp->headroom_timer);     /* calm: no wake-ups */
        return;
    }
    trace_balloon_pressure_event("cgroup-v1-headroom",
                                 balloon_policy_level_name(level));
    bp->handler(bp->opaque, level);
    timer_mod(bp->headroom_timer,
              qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + HEADROOM_REPEAT_MS);
}

static void headroom_event_cb(void *opaque)
{
    BalloonPressure *bp = opaque;
    uint64_t count;

    if (read(bp->headroom_efd, &count, sizeof(count)) == sizeof(count)) {
        headroom_check(bp);
    }
}

static void headroom_timer_cb(void *opaque)
{
    headroom_check(opaque);
}

/* Register usage thresholds below the cgroup's limit, if it has one. */
static bool open_v1_headroom(BalloonPressure *bp, const char *dir,
                             const char *control, Error **errp)
{
    g_autofree char *usage = g_build_filename(dir, "memory.usage_in_bytes",
                                              NULL);
    size_t i;

    if (!read_limit(dir, "memory.limit_in_bytes", &bp->limit)) {
        append_detail(bp, "no memory limit, so no headroom thresholds");
        return true;
    }
    bp->usage_fd = qemu_open_old(usage, O_RDONLY);
    bp->headroom_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (bp->usage_fd < 0 || bp->headroom_efd < 0) {
        error_setg_errno(errp, errno, "cannot open %s", usage);
        return false;
    }
    for (i = 0; i < ARRAY_SIZE(headroom_thresholds); i++) {
        g_autofree char *reg = g_strdup_printf(
            "%d %d %" PRIu64, bp->headroom_efd, bp->usage_fd,
            bp->limit / 1000 * headroom_thresholds[i].permille);
        int cfd = qemu_open_old(control, O_WRONLY);

        if (cfd < 0 || write(cfd, reg, strlen(reg)) < 0) {
            error_setg_errno(errp, errno, "cannot register a usage threshold"
                             " in %s", control);
            if (cfd >= 0) {
                close(cfd);
            }
            return false;
        }
        close(cfd);
    }
    bp->headroom_timer = timer_new_ms(QEMU_CLOCK_REALTIME, headroom_timer_cb,
                                      bp);
    qemu_set_fd_handler(bp->headroom_efd, headroom_event_cb, NULL, bp);
    append_detail(bp, "usage thresholds at 80/90/95%% of the %" PRIu64
                  " MiB limit", bp->limit / MiB);
    /* Already above a threshold: report it now. */
    headroom_check(bp);
    return true;
}

static bool open_v1(BalloonPressure *bp, const char *dir, Error **errp)
{
    g_autofree char *level_path = g_build_filename(dir, "memory.pressure_level",
                                                   NULL);
    g_autofree char *control = g_build_filename(dir, "cgroup.event_control",
                                                NULL);
    int l;

    for (l = BALLOON_POLICY_LEVEL_LOW; l < BALLOON_POLICY_LEVEL__MAX; l++) {
        PressureWatch *w = new_watch(bp, l);
        g_autofree char *reg = NULL;
        int cfd;

        w->is_eventfd = true;
        w->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        w->level_fd = qemu_open_old(level_path, O_RDONLY);
        if (w->fd < 0 || w->level_fd < 0) {
            error_setg_errno(errp, errno, "cannot open %s", level_path);
            return false;
        }
        cfd = qemu_open_old(control, O_WRONLY);
        reg = g_strdup_printf("%d %d %s", w->fd, w->level_fd, v1_levels[l]);
        if (cfd < 0 || write(cfd, reg, strlen(reg)) < 0) {
            error_setg_errno(errp, errno, "cannot register for %s events "
                             "in %s", v1_levels[l], control);
            if (cfd >= 0) {
                close(cfd);
            }
            return false;
        }
        close(cfd);
        qemu_set_fd_handler(w->fd, eventfd_read_cb, NULL, w);
    }
    return open_v1_headroom(bp, dir, control, errp);
}

/*
 * Arm the PSI triggers on @file.  Linux >= 6.5 refuses windows that are
 * not a multiple of 2 s to unprivileged openers (EINVAL): fall back to a
 * 2 s window and say so in the detail.
 */
static bool open_psi(BalloonPressure *bp, const char *file,
                     uint32_t window_ms, Error **errp)
{
    size_t i;
    uint32_t window = window_ms;

    for (i = 0; i < ARRAY_SIZE(psi_triggers); i++) {
        PressureWatch *w = new_watch(bp, psi_triggers[i].level);
        uint64_t win_us, stall_us;
        g_autofree char *trig = NULL;

        w->fd = qemu_open_old(file, O_RDWR | O_NONBLOCK);
        if (w->fd < 0) {
            error_setg_errno(errp, errno, "cannot open %s", file);
            return false;
        }
        for (;;) {
            win_us = (uint64_t)window * 1000;
            stall_us = win_us * psi_triggers[i].stall_permille / 1000;
            g_free(trig);
            trig = g_strdup_printf("%s %" PRIu64 " %" PRIu64,
                                   psi_triggers[i].type, stall_us, win_us);
            if (write(w->fd, trig, strlen(trig) + 1) >= 0) {
                break;
            }
            if (errno != EINVAL || window % 2000 == 0) {
                error_setg_errno(errp, errno, "cannot arm PSI trigger '%s' "
                                 "on %s", trig, file);
                return false;
            }
            /* at most once: the next multiple of 2 s is always allowed */
            window = QEMU_ALIGN_UP(window, 2000);
        }
        watch_psi_fd(w);
    }
    if (window != window_ms) {
        append_detail(bp, "PSI window %u ms (the kernel refused %u ms: "
                      "unprivileged windows must be multiples of 2 s)",
                      window, window_ms);
    }
    return true;
}

static bool open_fd(BalloonPressure *bp, const BalloonPressureConfig *cfg,
                    Error **errp)
{
    PressureWatch *w = new_watch(bp, cfg->fd_level);
    g_autofree char *link = NULL;
    g_autofree char *target = NULL;

    Monitor *mon = monitor_cur();

    if (g_str_has_prefix(cfg->fd, "/dev/fdset/")) {
        w->fd = qemu_open(cfg->fd, O_RDWR, errp);
    } else if (mon && qemu_isdigit(cfg->fd[0])) {
        /* QEMU would adopt (and one day close) a descriptor of its own */
        error_setg(errp, "a descriptor number is accepted on the command "
                   "line only; hand the descriptor over with getfd or "
                   "add-fd and give its name or /dev/fdset/N");
        return false;
    } else {
        w->fd = monitor_fd_param(mon, cfg->fd, errp);
    }
    if (w->fd < 0) {
        return false;
    }
    link = g_strdup_printf("/proc/self/fd/%d", w->fd);
    target = g_file_read_link(link, NULL);
    bp->path = g_strdup_printf("%s (%s)", cfg->fd, target ? target : "?");
    w->is_eventfd = target && strstr(target, "eventfd");
    if (w->is_eventfd) {
        g_unix_set_fd_nonblocking(w->fd, true, NULL);
        qemu_set_fd_handler(w->fd, eventfd_read_cb, NULL, w);
    } else {
        watch_psi_fd(w);
    }
    bp->detail = g_strdup_printf("descriptor handed over by management, "
                                 "events mapped to level %s",
                                 balloon_policy_level_name(cfg->fd_level));
    return true;
}

static bool open_kind(BalloonPressure *bp, BalloonPressureKind kind,
                      const BalloonPressureConfig *cfg, bool autodetect,
                      Error **errp)
{
    g_autofree char *dir = NULL;
    g_autofree char *file = NULL;
    bool is_root = false;

    bp->kind = kind;
    switch (kind) {
    case BALLOON_PRESSURE_CGROUP_V1:
    case BALLOON_PRESSURE_CGROUP_V2:
        dir = cgroup_dir(kind == BALLOON_PRESSURE_CGROUP_V1 ? "memory" : NULL,
                         cfg->cgroup, &is_root, errp);
        if (!dir) {
            return false;
        }
        if (autodetect && is_root) {
            error_setg(errp, "QEMU runs in the root %s cgroup",
                       balloon_pressure_kind_name(kind));
            return false;
        }
        /*
         * Without a memory limit there, a v2 cgroup's PSI stays quiet
         * until a v1 memcg OOM-kills: the v1 source has usage thresholds.
         */
        if (autodetect && kind == BALLOON_PRESSURE_CGROUP_V2 &&
            !v2_has_memory_controller()) {
            error_setg(errp, "the memory controller is on cgroup v1 here");
            return false;
        }
        file = g_build_filename(dir, kind == BALLOON_PRESSURE_CGROUP_V1 ?
                                "memory.pressure_level" : "memory.pressure",
                                NULL);
        if (access(file, F_OK) != 0) {
            error_setg_errno(errp, errno, "cannot use %s", file);
            return false;
        }
        bp->path = g_steal_pointer(&dir);
        bp->detail = g_strdup(cfg->cgroup ? "cgroup given by property" :
                              "QEMU's own cgroup");
        return kind == BALLOON_PRESSURE_CGROUP_V1 ?
               open_v1(bp, bp->path, errp) :
               open_psi(bp, file, cfg->psi_window_ms, errp);
    case BALLOON_PRESSURE_SYSTEM:
        bp->path = g_strdup(PROC_PSI_MEMORY);
        bp->detail = g_strdup("system-wide PSI");
        return open_psi(bp, PROC_PSI_MEMORY, cfg->psi_window_ms, errp);
    case BALLOON_PRESSURE_FD:
        if (!cfg->fd) {
            error_setg(errp, "pressure-source=fd needs pressure-fd");
            return false;
        }
        return open_fd(bp, cfg, errp);
    case BALLOON_PRESSURE_NONE:
        bp->detail = g_strdup("no host pressure source: reacting to guest "
                              "pressure only");
        return true;
    default:
        g_assert_not_reached();
    }
}

static void close_watches(BalloonPressure *bp)
{
    int i;

    for (i = 0; i < bp->nwatch; i++) {
        PressureWatch *w = &bp->watch[i];

        if (w->source) {
            g_source_remove(w->source);
        }
        if (w->fd >= 0) {
            if (w->is_eventfd) {
                qemu_set_fd_handler(w->fd, NULL, NULL, NULL);
            }
            /* it may be a dup from an fdset, which must learn of it */
            qemu_close(w->fd);
        }
        if (w->level_fd >= 0) {
            close(w->level_fd);
        }
    }
    bp->nwatch = 0;
    if (bp->headroom_efd >= 0) {
        qemu_set_fd_handler(bp->headroom_efd, NULL, NULL, NULL);
        close(bp->headroom_efd);
        bp->headroom_efd = -1;
    }
    if (bp->usage_fd >= 0) {
        close(bp->usage_fd);
        bp->usage_fd = -1;
    }
    g_clear_pointer(&bp->headroom_timer, timer_free);
    g_clear_pointer(&bp->path, g_free);
    g_clear_pointer(&bp->detail, g_free);
}

BalloonPressure *balloon_pressure_open(const BalloonPressureConfig *cfg,
                                       BalloonPressureHandler *handler,
                                       void *opaque, Error **errp)
{
    static const BalloonPressureKind order[] = {
        BALLOON_PRESSURE_CGROUP_V2, BALLOON_PRESSURE_CGROUP_V1,
        BALLOON_PRESSURE_SYSTEM,
    };
    BalloonPressure *bp = g_new0(BalloonPressure, 1);
    g_autoptr(GString) tried = g_string_new("");
    size_t i;

    bp->handler = handler;
    bp->opaque = opaque;
    bp->usage_fd = -1;
    bp->headroom_efd = -1;

    if (cfg->kind != BALLOON_PRESSURE_AUTO) {
        Error *err = NULL;

        if (open_kind(bp, cfg->kind, cfg, false, &err)) {
            return bp;
        }
        if (!cfg->fall_back_to_none) {
            error_propagate(errp, err);
            balloon_pressure_close(bp);
            return NULL;
        }
        close_watches(bp);
        warn_report("virtio-balloon: cannot open the host memory-pressure "
                    "source '%s' here (%s); automatic ballooning reacts to "
                    "guest pressure only",
                    balloon_pressure_kind_name(cfg->kind),
                    error_get_pretty(err));
        bp->kind = BALLOON_PRESSURE_NONE;
        bp->detail = g_strdup_printf("could not open '%s' on this host: %s",
                                     balloon_pressure_kind_name(cfg->kind),
                                     error_get_pretty(err));
        error_free(err);
        return bp;
    }

    for (i = 0; i < ARRAY_SIZE(order); i++) {
        Error *err = NULL;

        if (open_kind(bp, order[i], cfg, true, &err)) {
            g_autofree char *old = bp->detail;

            bp->detail = g_strdup_printf("auto-detected: %s%s%s", old,
                                         tried->len ? "; skipped: " : "",
                                         tried->str);
            return bp;
        }
        g_string_append_printf(tried, "%s%s (%s)", tried->len ? ", " : "",
                               balloon_pressure_kind_name(order[i]),
                               error_get_pretty(err));
        error_free(err);
        close_watches(bp);
    }
    warn_report("virtio-balloon: no usable host memory-pressure source (%s);"
                " automatic ballooning reacts to guest pressure only",
                tried->str);
    bp->kind = BALLOON_PRESSURE_NONE;
    bp->detail = g_strdup_printf("auto-detection found no source: %s",
                                 tried->str);
    return bp;
}

void balloon_pressure_close(BalloonPressure *bp)
{
    if (!bp) {
        return;
    }
    close_watches(bp);
    g_free(bp);
}
