/*
 * QTest cases for the automatic virtio-balloon: properties, QMP, HMP
 *
 * Host pressure is delivered through an eventfd handed to QEMU
 * (pressure-fd), so the tests are deterministic.  Where a test needs the
 * guest's statistics, a minimal driver built on libqos plays the guest:
 * it sets up the three virtqueues and hands statistics buffers over.
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/eventfd.h>
#include "qemu/units.h"
#include "qemu/bswap.h"
#include "libqtest.h"
#include "qapi/error.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "qobject/qjson.h"
#include "libqos/libqos-pc.h"
#include "libqos/virtio.h"
#include "libqos/virtio-pci.h"
#include "standard-headers/linux/virtio_ids.h"
#include "standard-headers/linux/virtio_balloon.h"

#define BALLOON_SLOT 4
#define STATS_POLL_NS (2 * 1000 * 1000 * 1000LL)

static int64_t qom_get_int(QTestState *qts, const char *path,
                           const char *prop)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'qom-get', 'arguments':"
                           " {'path': %s, 'property': %s}}", path, prop);
    int64_t v = qdict_get_int(rsp, "return");

    qobject_unref(rsp);
    return v;
}

static char *qom_get_str(QTestState *qts, const char *path, const char *prop)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'qom-get', 'arguments':"
                           " {'path': %s, 'property': %s}}", path, prop);
    char *v = g_strdup(qdict_get_str(rsp, "return"));

    qobject_unref(rsp);
    return v;
}

static QDict *query(QTestState *qts)
{
    return qtest_qmp_assert_success_ref(qts,
                                        "{'execute': 'query-balloon-auto'}");
}

/* The automatic balloon rests at @size: baseline and target. */
static void assert_rests_at(QDict *info, int64_t size)
{
    g_assert_cmpint(qdict_get_int(info, "baseline"), ==, size);
    g_assert_cmpint(qdict_get_int(info, "target"), ==, size);
}

/* A unix socket path for a migration between two test QEMUs. */
static char *migration_uri(void)
{
    return g_strdup_printf("unix:%s/balloon-auto-%d.sock", g_get_tmp_dir(),
                           getpid());
}

/* No decisions: @status, because of @blocker. */
static void assert_blocked(QDict *info, const char *status,
                           const char *blocker)
{
    g_assert_cmpstr(qdict_get_str(info, "status"), ==, status);
    g_assert_cmpstr(qdict_get_str(info, "blocked-by"), ==, blocker);
}

/* balloon-auto-set with @args (JSON) fails with an error containing @expect. */
static void assert_set_refused(QTestState *qts, const char *args,
                               const char *expect)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'balloon-auto-set',"
                           " 'arguments': %p}",
                           qobject_from_json(args, &error_abort));
    const char *desc;

    g_assert_true(qdict_haskey(rsp, "error"));
    desc = qdict_get_str(qdict_get_qdict(rsp, "error"), "desc");
    g_test_message("%s -> %s", args, desc);
    g_assert_nonnull(strstr(desc, expect));
    qobject_unref(rsp);
}

static void test_disabled_by_default(void)
{
    QTestState *qts = qtest_init("-M q35 -m 512M -device "
                                 "virtio-balloon-pci,id=balloon0");
    QDict *info = query(qts);

    g_assert_false(qdict_get_bool(info, "enabled"));
    g_assert_cmpstr(qdict_get_str(info, "status"), ==, "disabled");
    g_assert_cmpint(qdict_get_int(info, "max"), ==, 512 * MiB);
    g_assert_cmpint(qdict_get_int(info, "actual"), ==, 512 * MiB);
    qobject_unref(info);
    qtest_quit(qts);
}

static void test_no_balloon(void)
{
    QTestState *qts = qtest_init("-M q35");
    QDict *rsp = qtest_qmp(qts, "{'execute': 'query-balloon-auto'}");

    g_assert_cmpstr(qdict_get_str(qdict_get_qdict(rsp, "error"), "class"),
                    ==, "DeviceNotActive");
    qobject_unref(rsp);
    rsp = qtest_qmp(qts, "{'execute': 'balloon-auto-set',"
                    " 'arguments': {'enabled': true}}");
    g_assert_cmpstr(qdict_get_str(qdict_get_qdict(rsp, "error"), "class"),
                    ==, "DeviceNotActive");
    qobject_unref(rsp);
    qtest_quit(qts);
}

/*
 * Each bad property value is refused at realize with an error naming the
 * property, and leaves nothing behind: a good device can be added after.
 */
static void test_bad_properties(void)
{
    static const struct {
        const char *props;
        const char *expect;
    } bad[] = {
        { "'pressure-source': 'bogus'", "pressure-source" },
        { "'pressure-source': 'fd'", "pressure-fd" },
        { "'pressure-fd-level': 'huge', 'pressure-source': 'none'",
          "pressure-fd-level" },
        { "'inflate-medium': 101, 'pressure-source': 'none'",
          "inflate-medium" },
        { "'auto-floor': 2147483648, 'pressure-source': 'none'",
          "auto-floor" },
        { "'auto-reserve': 1073741824, 'pressure-source': 'none'",
          "auto-reserve" },
        { "'auto-max-step': 1024, 'pressure-source': 'none'",
          "auto-max-step" },
        { "'psi-window-ms': 100, 'pressure-source': 'none'",
          "psi-window-ms" },
        { "'pressure-source': 'cgroup-v1',"
          " 'pressure-cgroup': '/no/such/cgroup'", "pressure-source" },
        { "'pressure-fd': 'nosuchfd'", "pressure-source=fd" },
    };
    QTestState *qts = qtest_init("-M pc -m 1G");
    size_t i;

    for (i = 0; i < ARRAY_SIZE(bad); i++) {
        g_autofree char *args = g_strdup_printf(
            "{'driver': 'virtio-balloon-pci', 'id': 'b%zu',"
            " 'automatic': true, %s}", i, bad[i].props);
        QDict *rsp = qtest_qmp(qts, "{'execute': 'device_add',"
                               " 'arguments': %p}",
                               qobject_from_json(args, &error_abort));
        const char *desc;

        g_assert_true(qdict_haskey(rsp, "error"));
        desc = qdict_get_str(qdict_get_qdict(rsp, "error"), "desc");
        g_test_message("%s -> %s", bad[i].props, desc);
        g_assert_nonnull(strstr(desc, bad[i].expect));
        qobject_unref(rsp);
    }
    qtest_qmp_assert_success(qts, "{'execute': 'device_add', 'arguments':"
                             " {'driver': 'virtio-balloon-pci', 'id': 'ok',"
                             " 'automatic': true,"
                             " 'pressure-source': 'none'}}");
    qtest_quit(qts);
}

/* Memory the balloon cannot return is refused for automatic mode. */
static void test_unreturnable_memory(void)
{
    g_autofree char *dir = g_dir_make_tmp("balloon-auto-XXXXXX", NULL);
    g_autofree char *file = g_build_filename(dir, "ram", NULL);
    QTestState *qts = qtest_initf("-M pc,memory-backend=m -m 256M -object "
                                  "memory-backend-file,id=m,size=256M,"
                                  "mem-path=%s,share=off", file);
    QDict *rsp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments':"
                           " {'driver': 'virtio-balloon-pci', 'id': 'b',"
                           " 'automatic': true}}");
    const char *desc = qdict_get_str(qdict_get_qdict(rsp, "error"), "desc");

    g_test_message("%s", desc);
    g_assert_nonnull(strstr(desc, "share=off"));
    qobject_unref(rsp);
    /* without automatic the device is fine */
    qtest_qmp_assert_success(qts, "{'execute': 'device_add', 'arguments':"
                             " {'driver': 'virtio-balloon-pci', 'id': 'b'}}");
    qtest_quit(qts);
    unlink(file);
    rmdir(dir);
}

static QTestState *start_with_eventfd(int *efd, const char *extra)
{
    QTestState *qts;

    *efd = eventfd(0, 0);
    g_assert_cmpint(*efd, >=, 0);
    qts = qtest_initf("-M q35 -m 1G -device virtio-balloon-pci,id=balloon0,"
                      "automatic=on,pressure-fd=%d,pressure-fd-level=critical"
                      "%s", *efd, extra);
    return qts;
}

static void signal_pressure(int efd)
{
    uint64_t one = 1;

    g_assert_cmpint(write(efd, &one, sizeof(one)), ==, sizeof(one));
}

/* @member of the entry of @list (in @info) whose @key is @name. */
static int64_t counter(QDict *info, const char *list, const char *key,
                       const char *name, const char *member)
{
    QListEntry *e;

    QLIST_FOREACH_ENTRY(qdict_get_qlist(info, list), e) {
        QDict *c = qobject_to(QDict, qlist_entry_obj(e));

        if (!strcmp(qdict_get_str(c, key), name)) {
            return qdict_get_int(c, member);
        }
    }
    g_assert_not_reached();
}

static int64_t level_events(QDict *info, const char *level)
{
    return counter(info, "events", "level", level, "events");
}

static int64_t reason_count(QDict *info, const char *reason)
{
    return counter(info, "decisions", "reason", reason, "count");
}

/*
 * Pressure arrives through the handed-over eventfd and is counted; with
 * no guest driver (no statistics) the balloon does not inflate: unknown
 * guest state never causes a runaway target.
 */
static void test_pressure_fd_no_driver(void)
{
    int efd, i;
    QTestState *qts = start_with_eventfd(&efd, "");
    QDict *info = query(qts);
    QDict *src = qdict_get_qdict(info, "source");

    g_assert_true(qdict_get_bool(info, "enabled"));
    /* no guest driver: events are counted, no decisions */
    assert_blocked(info, "paused", "guest-driver");
    g_assert_cmpstr(qdict_get_str(src, "kind"), ==, "fd");
    g_assert_nonnull(strstr(qdict_get_str(src, "path"), "eventfd"));
    g_assert_cmpint(qdict_get_int(info, "baseline"), ==, 1 * GiB);
    g_assert_cmpint(qdict_get_int(info, "floor"), ==, 256 * MiB);
    g_assert_false(qdict_haskey(info, "guest-stats"));
    qobject_unref(info);

    for (i = 0; i < 3; i++) {
        signal_pressure(efd);
        /* let the main loop run the fd handler */
        qtest_clock_step(qts, 100 * 1000 * 1000);
        info = query(qts);
        if (level_events(info, "critical") == i + 1) {
            qobject_unref(info);
            continue;
        }
        qobject_unref(info);
        g_usleep(100 * 1000);
        i--;
    }
    info = query(qts);
    g_assert_cmpint(level_events(info, "critical"), ==, 3);
    g_assert_cmpstr(qdict_get_str(info, "level"), ==, "critical");
    g_assert_true(qdict_haskey(info, "level-age-ms"));
    g_assert_cmpint(qdict_get_int(info, "target"), ==, 1 * GiB);
    g_assert_false(qdict_haskey(info, "last-decision"));
    qobject_unref(info);

    /* The level decays when no more events come. */
    qtest_clock_step(qts, 10LL * 1000 * 1000 * 1000);
    info = query(qts);
    g_assert_cmpstr(qdict_get_str(info, "level"), ==, "none");
    qobject_unref(info);
    qtest_quit(qts);
    close(efd);
}

/* System-wide PSI triggers can be armed (possibly with a 2 s window). */
static void test_system_psi(void)
{
    QTestState *qts;
    QDict *info, *src;

    if (access("/proc/pressure/memory", W_OK) != 0) {
        g_test_skip("no writable /proc/pressure/memory (PSI disabled?)");
        return;
    }
    qts = qtest_init("-M q35 -m 1G -device virtio-balloon-pci,id=balloon0,"
                     "automatic=on,pressure-source=system,"
                     "psi-window-ms=1000");
    info = query(qts);
    src = qdict_get_qdict(info, "source");
    g_test_message("%s", qdict_get_str(src, "detail"));
    g_assert_cmpstr(qdict_get_str(src, "kind"), ==, "system");
    g_assert_cmpstr(qdict_get_str(src, "path"), ==, "/proc/pressure/memory");
    g_assert_false(qdict_get_bool(src, "lost"));
    assert_blocked(info, "paused", "guest-driver");
    qobject_unref(info);
    qtest_quit(qts);
}

/* A manual balloon sets the baseline; the target follows it. */
static void test_manual_sets_baseline(void)
{
    int efd;
    QTestState *qts = start_with_eventfd(&efd, "");
    QDict *info;

    qtest_qmp_assert_success(qts, "{'execute': 'balloon',"
                             " 'arguments': {'value': %" PRId64 "}}",
                             (int64_t)(768 * MiB));
    info = query(qts);
    assert_rests_at(info, 768 * MiB);
    qobject_unref(info);
    qtest_quit(qts);
    close(efd);
}

static void test_set_command(void)
{
    int efd;
    QTestState *qts = start_with_eventfd(&efd, "");
    QDict *info;
    static const char *const bad[] = {
        "{'floor': 4294967296}", "auto-floor",
        "{'inflate-low': 200}", "inflate-low",
        "{'reserve': 1073741824}", "auto-reserve",
        "{'max-step': 1}", "auto-max-step",
        "{'return-step': 1}", "auto-return-step",
        "{'hold-ms': 4000000000}", "hold-ms",
        "{'cooldown-ms': 4000000000}", "auto-cooldown-ms",
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(bad); i += 2) {
        assert_set_refused(qts, bad[i], bad[i + 1]);
    }

    /* Tunables take effect and qom-get agrees with the query. */
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'floor': %" PRId64 ","
                             " 'inflate-medium': 20, 'dry-run': true}}",
                             (int64_t)(300 * MiB));
    info = query(qts);
    g_assert_cmpint(qdict_get_int(info, "floor"), ==, 300 * MiB);
    g_assert_true(qdict_get_bool(info, "dry-run"));
    qobject_unref(info);
    g_assert_cmpint(qom_get_int(qts, "balloon0", "auto-floor"), ==,
                    300 * MiB);
    g_assert_cmpint(qom_get_int(qts, "balloon0", "inflate-medium"), ==,
                    20);
    g_assert_true(qtest_qom_get_bool(qts, "balloon0", "auto-dry-run"));

    /* Hold, then off: plain manual ballooning at the baseline. */
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'dry-run': false,"
                             " 'hold-ms': 60000}}");
    info = query(qts);
    g_assert_cmpstr(qdict_get_str(info, "status"), ==, "held");
    g_assert_cmpint(qdict_get_int(info, "hold-remaining-ms"), >, 59000);
    qobject_unref(info);
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'enabled': false}}");
    info = query(qts);
    g_assert_false(qdict_get_bool(info, "enabled"));
    g_assert_cmpstr(qdict_get_str(info, "status"), ==, "disabled");
    g_assert_cmpint(qdict_get_int(info, "target"), ==, 1 * GiB);
    qobject_unref(info);
    g_assert_false(qtest_qom_get_bool(qts, "balloon0", "automatic"));
    qtest_quit(qts);
    close(efd);
}

/* The guest side: a virtio-balloon driver that only reports statistics. */
typedef struct BalloonDriver {
    QOSState *qs;
    QVirtioPCIDevice *dev;
    QVirtQueue *vq[3];          /* inflate, deflate, stats */
    uint64_t stats_addr;
    bool stats_held;            /* the device holds our buffer */
} BalloonDriver;

static QTestState *driver_boot(BalloonDriver *d, int efd, const char *extra)
{
    QVirtioDevice *vdev;
    uint64_t features;
    int i;

    d->qs = qtest_pc_boot("-M pc -m 1G -device virtio-balloon-pci,"
                          "id=balloon0,addr=%d.0,automatic=on,"
                          "pressure-fd=%d,pressure-fd-level=critical%s",
                          BALLOON_SLOT, efd, extra);
    d->dev = virtio_pci_new(d->qs->pcibus, &(QPCIAddress) {
                                .devfn = QPCI_DEVFN(BALLOON_SLOT, 0) });
    g_assert_nonnull(d->dev);
    vdev = &d->dev->vdev;
    g_assert_cmpint(vdev->device_type, ==, VIRTIO_ID_BALLOON);
    qvirtio_pci_device_enable(d->dev);
    qvirtio_start_device(vdev);
    features = qvirtio_get_features(vdev);
    qvirtio_set_features(vdev, features &
                         ((1ull << VIRTIO_BALLOON_F_STATS_VQ) |
                          (1ull << VIRTIO_F_VERSION_1)));
    for (i = 0; i < ARRAY_SIZE(d->vq); i++) {
        d->vq[i] = qvirtqueue_setup(vdev, &d->qs->alloc, i);
    }
    qvirtio_set_driver_ok(vdev);
    d->stats_addr = guest_alloc(&d->qs->alloc,
                                3 * sizeof(struct virtio_balloon_stat));
    d->stats_held = false;
    return d->qs->qts;
}

static void driver_stop(BalloonDriver *d)
{
    int i;

    for (i = 0; i < ARRAY_SIZE(d->vq); i++) {
        qvirtqueue_cleanup(d->dev->vdev.bus, d->vq[i], &d->qs->alloc);
    }
    qvirtio_pci_device_disable(d->dev);
    qos_object_destroy((QOSGraphObject *)d->dev);
    qtest_shutdown(d->qs);
}

/*
 * Report statistics like a Linux guest: the buffer goes back and forth,
 * the device returning it at each poll (every 2 s once automatic is on).
 */
static void driver_send_stats(BalloonDriver *d, uint64_t available)
{
    QTestState *qts = d->qs->qts;
    struct virtio_balloon_stat st[] = {
        { cpu_to_le16(VIRTIO_BALLOON_S_MEMTOT), cpu_to_le64(1 * GiB) },
        { cpu_to_le16(VIRTIO_BALLOON_S_AVAIL), cpu_to_le64(available) },
        { cpu_to_le16(VIRTIO_BALLOON_S_MEMFREE), cpu_to_le64(available) },
    };
    uint32_t head, len;

    if (d->stats_held) {
        qtest_clock_step(qts, STATS_POLL_NS);
        g_assert_true(qvirtqueue_get_buf(qts, d->vq[2], &head, &len));
    }
    qtest_memwrite(qts, d->stats_addr, st, sizeof(st));
    head = qvirtqueue_add(qts, d->vq[2], d->stats_addr, sizeof(st), false,
                          false);
    qvirtqueue_kick(qts, &d->dev->vdev, d->vq[2], head);
    d->stats_held = true;
}

/* Signal one pressure event and wait until QEMU has counted it. */
static void pressure_event(QTestState *qts, int efd, const char *level)
{
    QDict *info = query(qts);
    int64_t before = level_events(info, level);

    qobject_unref(info);
    signal_pressure(efd);
    for (;;) {
        info = query(qts);
        if (level_events(info, level) > before) {
            qobject_unref(info);
            return;
        }
        qobject_unref(info);
        g_usleep(10 * 1000);
    }
}

static int count_events(QTestState *qts, const char *name, QDict **last)
{
    QDict *ev;
    int n = 0;

    while ((ev = qtest_qmp_event_ref(qts, name))) {
        qobject_unref(*last);
        *last = ev;
        n++;
    }
    return n;
}

/*
 * Guest statistics plus a host pressure event make an inflate decision,
 * reported by BALLOON_AUTO_DECISION and matching the query; the target
 * reaches the driver through the config space.
 */
static void test_decision_event(void)
{
    BalloonDriver d;
    int efd = eventfd(0, 0);
    QTestState *qts = driver_boot(&d, efd, "");
    QDict *ev, *data, *info, *last;
    int64_t new_target;

    driver_send_stats(&d, 800 * MiB);
    info = query(qts);
    g_assert_cmpint(qdict_get_int(qdict_get_qdict(info, "guest-stats"),
                                  "available"), ==, 800 * MiB);
    qobject_unref(info);

    pressure_event(qts, efd, "critical");
    ev = qtest_qmp_eventwait_ref(qts, "BALLOON_AUTO_DECISION");
    data = qdict_get_qdict(ev, "data");
    g_assert_cmpstr(qdict_get_str(data, "reason"), ==, "host-pressure");
    g_assert_cmpstr(qdict_get_str(data, "level"), ==, "critical");
    g_assert_cmpint(qdict_get_int(data, "old-target"), ==, 1 * GiB);
    g_assert_cmpint(qdict_get_int(data, "actual"), ==, 1 * GiB);
    g_assert_true(qdict_get_bool(data, "applied"));
    new_target = qdict_get_int(data, "new-target");
    /* 25% of what the guest can spare (736 MiB), in 4 MiB steps */
    g_assert_cmpint(new_target, <, 1 * GiB - 150 * MiB);
    g_assert_cmpint(new_target, >, 1 * GiB - 200 * MiB);

    info = query(qts);
    last = qdict_get_qdict(info, "last-decision");
    g_assert_cmpint(qdict_get_int(info, "target"), ==, new_target);
    g_assert_cmpstr(qdict_get_str(last, "reason"), ==, "host-pressure");
    g_assert_cmpint(qdict_get_int(last, "new-target"), ==, new_target);
    g_assert_cmpint(qdict_get_int(last, "old-target"), ==, 1 * GiB);
    g_assert_true(qdict_get_bool(last, "applied"));
    qobject_unref(info);
    /* what the guest driver reads: num_pages, in 4 KiB pages */
    g_assert_cmpint(qvirtio_config_readl(&d.dev->vdev, 0), ==,
                    (1 * GiB - new_target) >> VIRTIO_BALLOON_PFN_SHIFT);
    qobject_unref(ev);
    driver_stop(&d);
    close(efd);
}

/*
 * A pressure storm in dry-run mode decides on every event, but the
 * monitor sees the events throttled like BALLOON_CHANGE: the first one at
 * once, the last one of the burst when the second is over.  (Under qtest
 * the throttle runs on the virtual clock, so this is deterministic.)
 */
static void test_decision_event_throttled(void)
{
    BalloonDriver d;
    int efd = eventfd(0, 0);
    QTestState *qts = driver_boot(&d, efd, ",auto-dry-run=on,"
                                  "auto-cooldown-ms=0");
    QDict *info, *last = NULL, *data, *ev;
    int i;

    driver_send_stats(&d, 800 * MiB);
    for (i = 0; i < 20; i++) {
        pressure_event(qts, efd, "critical");
    }
    info = query(qts);
    g_assert_cmpint(reason_count(info, "host-pressure"), ==, 20);
    /* dry run: the target did not move */
    g_assert_cmpint(qdict_get_int(info, "target"), ==, 1 * GiB);
    qobject_unref(info);
    g_assert_cmpint(count_events(qts, "BALLOON_AUTO_DECISION", &last), ==,
                    1);

    qtest_clock_step(qts, 1100 * 1000 * 1000);
    info = query(qts);
    g_assert_cmpint(count_events(qts, "BALLOON_AUTO_DECISION", &last), ==,
                    1);
    /* the event delivered last is the last decision */
    data = qdict_get_qdict(info, "last-decision");
    ev = qdict_get_qdict(last, "data");
    g_assert_false(qdict_get_bool(ev, "applied"));
    g_assert_cmpint(qdict_get_int(ev, "new-target"), ==,
                    qdict_get_int(data, "new-target"));
    g_assert_cmpint(qdict_get_int(ev, "old-target"), ==, 1 * GiB);
    qobject_unref(info);
    qobject_unref(last);
    driver_stop(&d);
    close(efd);
}

static void wait_migration_completed(QTestState *qts)
{
    for (;;) {
        QDict *rsp = qtest_qmp_assert_success_ref(qts,
                                                  "{'execute': 'query-migrate'}");
        const char *status = qdict_get_try_str(rsp, "status");

        g_assert_cmpstr(status, !=, "failed");
        if (!g_strcmp0(status, "completed")) {
            qobject_unref(rsp);
            return;
        }
        qobject_unref(rsp);
        g_usleep(20 * 1000);
    }
}

/* Migrate @src to @dst (listening on @uri) and wait until @dst runs. */
static void migrate_and_resume(QTestState *src, QTestState *dst,
                               const char *uri)
{
    qtest_qmp_assert_success(src, "{'execute': 'migrate',"
                             " 'arguments': {'uri': %s}}", uri);
    wait_migration_completed(src);
    qtest_qmp_eventwait(dst, "RESUME");
}

static void assert_same_member(QDict *a, QDict *b, const char *member)
{
    g_autoptr(GString) json = qobject_to_json(qdict_get(b, member));

    g_test_message("%s: %s", member, json->str);
    g_assert_true(qobject_is_equal(qdict_get(a, member),
                                   qdict_get(b, member)));
}

/*
 * The automatic state travels with the VM: the destination, started with
 * automatic off and a pressure source it cannot open, continues with the
 * source's target, baseline, counters and run-time tunables, says why it
 * has no host source, and keeps the VM running.
 */
static void test_migrate(void)
{
    static const char *const same[] = {
        "enabled", "dry-run", "target", "baseline", "max", "reserve",
        "events", "decisions", "pingpongs",
    };
    BalloonDriver d;
    int efd = eventfd(0, 0);
    QTestState *src = driver_boot(&d, efd, "");
    QTestState *dst;
    g_autofree char *uri = migration_uri();
    QDict *before, *after, *last_before, *last_after, *source;
    g_autofree char *hmp = NULL;
    size_t i;

    driver_send_stats(&d, 800 * MiB);
    pressure_event(src, efd, "critical");
    qtest_qmp_assert_success(src, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'inflate-medium': 20,"
                             " 'reserve': %" PRId64 "}}",
                             (int64_t)(100 * MiB));
    before = query(src);
    g_assert_cmpint(qdict_get_int(before, "target"), <, 1 * GiB);

    dst = qtest_initf("-M pc -m 1G -device virtio-balloon-pci,id=balloon0,"
                      "addr=%d.0,pressure-source=cgroup-v1,"
                      "pressure-cgroup=/no/such/cgroup -incoming %s",
                      BALLOON_SLOT, uri);
    migrate_and_resume(src, dst, uri);

    after = query(dst);
    for (i = 0; i < ARRAY_SIZE(same); i++) {
        assert_same_member(before, after, same[i]);
    }
    last_before = qdict_get_qdict(before, "last-decision");
    last_after = qdict_get_qdict(after, "last-decision");
    assert_same_member(last_before, last_after, "reason");
    assert_same_member(last_before, last_after, "new-target");
    assert_same_member(last_before, last_after, "old-target");
    assert_same_member(last_before, last_after, "level");
    assert_same_member(qdict_get_qdict(before, "guest-stats"),
                       qdict_get_qdict(after, "guest-stats"), "available");
    g_assert_cmpstr(qdict_get_str(after, "status"), ==, "active");
    source = qdict_get_qdict(after, "source");
    g_test_message("destination source: %s", qdict_get_str(source, "detail"));
    g_assert_cmpstr(qdict_get_str(source, "kind"), ==, "none");
    g_assert_nonnull(strstr(qdict_get_str(source, "detail"),
                            "could not open 'cgroup-v1' on this host"));
    g_assert_true(qtest_qom_get_bool(dst, "balloon0", "automatic"));
    g_assert_cmpint(qom_get_int(dst, "balloon0", "inflate-medium"), ==, 20);
    qobject_unref(after);

    /* the source has stopped deciding, and says why */
    after = query(src);
    assert_blocked(after, "paused", "vm-stopped");
    hmp = qtest_hmp(src, "info balloon");
    g_assert_nonnull(strstr(hmp, "automatic: paused by vm-stopped"));
    qobject_unref(after);
    qobject_unref(before);
    qtest_quit(dst);
    driver_stop(&d);
    close(efd);
}

/*
 * Automatic on at the destination only: it starts from where the source
 * left the balloon (the migrated target), not from the full size.
 */
static void test_migrate_to_automatic(void)
{
    g_autofree char *uri = migration_uri();
    QTestState *src = qtest_init("-M pc -m 1G -device "
                                 "virtio-balloon-pci,id=balloon0");
    QTestState *dst = qtest_initf("-M pc -m 1G -device virtio-balloon-pci,"
                                  "id=balloon0,automatic=on,"
                                  "pressure-source=none -incoming %s", uri);
    QDict *info;

    qtest_qmp_assert_success(src, "{'execute': 'balloon',"
                             " 'arguments': {'value': %" PRId64 "}}",
                             (int64_t)(768 * MiB));
    migrate_and_resume(src, dst, uri);
    info = query(dst);
    assert_blocked(info, "paused", "guest-driver");
    assert_rests_at(info, 768 * MiB);
    qobject_unref(info);
    qtest_quit(dst);
    qtest_quit(src);
}

/*
 * While a background snapshot runs, upstream ignores the guest's
 * inflations: the automatic balloon makes no decisions and says why.
 */
static void test_background_snapshot_inhibits(void)
{
    QTestState *qts = qtest_init("-M pc -m 1G -device virtio-balloon-pci,"
                                 "id=balloon0,automatic=on,"
                                 "pressure-source=none");
    QDict *info, *rsp;

    rsp = qtest_qmp(qts, "{'execute': 'migrate-set-capabilities',"
                    " 'arguments': {'capabilities': [{'capability':"
                    " 'background-snapshot', 'state': true}]}}");
    if (qdict_haskey(rsp, "error")) {
        /* needs userfaultfd write protection from the host kernel */
        g_test_skip(qdict_get_str(qdict_get_qdict(rsp, "error"), "desc"));
        qobject_unref(rsp);
        qtest_quit(qts);
        return;
    }
    qobject_unref(rsp);
    /* slow enough to look at it while it runs */
    qtest_qmp_assert_success(qts, "{'execute': 'migrate-set-parameters',"
                             " 'arguments': {'max-bandwidth': 1048576}}");
    qtest_qmp_assert_success(qts, "{'execute': 'migrate', 'arguments':"
                             " {'uri': 'exec:cat > /dev/null'}}");
    info = query(qts);
    assert_blocked(info, "inhibited", "background-snapshot");
    qobject_unref(info);
    qtest_qmp_assert_success(qts, "{'execute': 'migrate_cancel'}");
    qtest_quit(qts);
}

/* Likewise on the destination of a postcopy migration. */
static void test_postcopy_inhibits(void)
{
    g_autofree char *uri = migration_uri();
    const char *args = "-M pc -m 1G -device virtio-balloon-pci,id=balloon0,"
                       "automatic=on,pressure-source=none";
    QTestState *src = qtest_init(args);
    QTestState *dst = qtest_initf("%s -incoming defer", args);
    QTestState *both[] = { src, dst };
    QDict *info, *rsp;
    size_t i;

    for (i = 0; i < ARRAY_SIZE(both); i++) {
        rsp = qtest_qmp(both[i], "{'execute': 'migrate-set-capabilities',"
                        " 'arguments': {'capabilities': [{'capability':"
                        " 'postcopy-ram', 'state': true}]}}");
        if (qdict_haskey(rsp, "error")) {
            /* needs userfaultfd from the host kernel */
            g_test_skip(qdict_get_str(qdict_get_qdict(rsp, "error"),
                                      "desc"));
            qobject_unref(rsp);
            qtest_quit(dst);
            qtest_quit(src);
            return;
        }
        qobject_unref(rsp);
    }
    qtest_qmp_assert_success(src, "{'execute': 'migrate-set-parameters',"
                             " 'arguments': {'max-bandwidth': 1048576,"
                             " 'max-postcopy-bandwidth': 1048576}}");
    qtest_qmp_assert_success(dst, "{'execute': 'migrate-incoming',"
                             " 'arguments': {'uri': %s}}", uri);
    qtest_qmp_assert_success(src, "{'execute': 'migrate',"
                             " 'arguments': {'uri': %s}}", uri);
    qtest_qmp_assert_success(src, "{'execute': 'migrate-start-postcopy'}");
    qtest_qmp_eventwait(dst, "RESUME");
    info = query(dst);
    assert_blocked(info, "inhibited", "postcopy");
    qobject_unref(info);
    qtest_kill_qemu(dst);
    qtest_quit(dst);
    qtest_quit(src);
}

/*
 * Turned off at run time on a VM started with automatic=on: the
 * destination, started with the same command line, stays off.
 */
static void test_migrate_keeps_off(void)
{
    g_autofree char *uri = migration_uri();
    const char *args = "-M pc -m 1G -device virtio-balloon-pci,id=balloon0,"
                       "automatic=on,pressure-source=none";
    QTestState *src = qtest_init(args);
    QTestState *dst = qtest_initf("%s -incoming %s", args, uri);
    QDict *info;

    qtest_qmp_assert_success(src, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'enabled': false}}");
    migrate_and_resume(src, dst, uri);
    info = query(dst);
    g_assert_false(qdict_get_bool(info, "enabled"));
    g_assert_cmpstr(qdict_get_str(info, "status"), ==, "disabled");
    qobject_unref(info);
    g_assert_false(qtest_qom_get_bool(dst, "balloon0", "automatic"));
    qtest_quit(dst);
    qtest_quit(src);
}

/*
 * Least privilege at run time: management hands a descriptor over with
 * getfd and balloon-auto-set; a bad one leaves the running source alone.
 */
static void test_set_pressure_fd(void)
{
    int efd, mgmt_efd = eventfd(0, 0);
    QTestState *qts = start_with_eventfd(&efd, "");
    QDict *info, *rsp, *src;
    g_autofree char *fd_prop = NULL;
    static const char *const bad[] = {
        "{'pressure-fd-level': 'low'}", "'pressure-fd-level' needs",
        "{'pressure-fd': 'psi', 'pressure-fd-level': 'none'}",
        "'pressure-fd-level' must be",
        "{'pressure-fd': 'nosuchfd'}", "'pressure-fd': ",
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(bad); i += 2) {
        assert_set_refused(qts, bad[i], bad[i + 1]);
    }
    info = query(qts);
    g_assert_cmpstr(qdict_get_str(qdict_get_qdict(info, "source"), "kind"),
                    ==, "fd");
    g_assert_nonnull(strstr(qdict_get_str(qdict_get_qdict(info, "source"),
                                          "detail"), "level critical"));
    qobject_unref(info);

    rsp = qtest_qmp_fds(qts, &mgmt_efd, 1, "{'execute': 'getfd',"
                        " 'arguments': {'fdname': 'psi'}}");
    g_assert_false(qdict_haskey(rsp, "error"));
    qobject_unref(rsp);
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'pressure-fd': 'psi',"
                             " 'pressure-fd-level': 'low'}}");
    info = query(qts);
    src = qdict_get_qdict(info, "source");
    g_assert_cmpstr(qdict_get_str(src, "path"), ==,
                    "psi (anon_inode:[eventfd])");
    g_assert_nonnull(strstr(qdict_get_str(src, "detail"), "level low"));
    qobject_unref(info);
    fd_prop = qom_get_str(qts, "balloon0", "pressure-fd");
    g_assert_cmpstr(fd_prop, ==, "psi");
    pressure_event(qts, mgmt_efd, "low");

    /* off closes it; on again needs a new one */
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'enabled': false}}");
    assert_set_refused(qts, "{'pressure-fd': 'psi'}", "needs automatic");
    qtest_quit(qts);
    close(efd);
    close(mgmt_efd);
}

static void test_hmp(void)
{
    QTestState *qts = qtest_init("-M q35 -m 1G -device "
                                 "virtio-balloon-pci,id=balloon0");
    g_autofree char *out = NULL;

    out = qtest_hmp(qts, "info balloon");
    g_assert_nonnull(strstr(out, "balloon: actual=1024"));
    g_assert_null(strstr(out, "automatic"));
    g_free(out);
    out = qtest_hmp(qts, "balloon_auto on");
    g_free(out);
    out = qtest_hmp(qts, "info balloon");
    g_test_message("%s", out);
    g_assert_nonnull(strstr(out, "automatic: paused by guest-driver"));
    g_assert_nonnull(strstr(out, "baseline 1024 MiB"));
    g_free(out);
    out = qtest_hmp(qts, "balloon_auto maybe");
    g_assert_nonnull(strstr(out, "expected on, off or dry-run"));
    g_free(out);
    out = qtest_hmp(qts, "balloon_auto off");
    g_free(out);
    out = qtest_hmp(qts, "info balloon");
    g_assert_null(strstr(out, "automatic"));
    qtest_quit(qts);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    qtest_add_func("balloon-auto/disabled-by-default",
                   test_disabled_by_default);
    qtest_add_func("balloon-auto/no-balloon", test_no_balloon);
    qtest_add_func("balloon-auto/bad-properties", test_bad_properties);
    qtest_add_func("balloon-auto/unreturnable-memory",
                   test_unreturnable_memory);
    qtest_add_func("balloon-auto/pressure-fd-no-driver",
                   test_pressure_fd_no_driver);
    qtest_add_func("balloon-auto/system-psi", test_system_psi);
    qtest_add_func("balloon-auto/manual-sets-baseline",
                   test_manual_sets_baseline);
    qtest_add_func("balloon-auto/set-command", test_set_command);
    qtest_add_func("balloon-auto/hmp", test_hmp);
    qtest_add_func("balloon-auto/set-pressure-fd", test_set_pressure_fd);
    qtest_add_func("balloon-auto/decision-event", test_decision_event);
    qtest_add_func("balloon-auto/decision-event-throttled",
                   test_decision_event_throttled);
    qtest_add_func("balloon-auto/migrate", test_migrate);
    qtest_add_func("balloon-auto/migrate-to-automatic",
                   test_migrate_to_automatic);
    qtest_add_func("balloon-auto/migrate-keeps-off", test_migrate_keeps_off);
    qtest_add_func("balloon-auto/background-snapshot-inhibits",
                   test_background_snapshot_inhibits);
    qtest_add_func("balloon-auto/postcopy-inhibits", test_postcopy_inhibits);
    return g_test_run();
}
