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
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
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
#include "hw/acpi/pc-hotplug.h"

#define BALLOON_SLOT 4
#define NS_PER_SEC (1000 * 1000 * 1000LL)
#define STATS_POLL_NS (2 * NS_PER_SEC)
#define STATS_BUF_SIZE 256
#define USED_TIMEOUT_US (30 * 1000 * 1000)

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

/*
 * Off, query-balloon-auto reports the floor and reserve that turning it
 * on would use: the device's properties, then what balloon-auto-set
 * changed.
 */
static void test_off_reports_tunables(void)
{
    QTestState *qts = qtest_init("-M q35 -m 1G -device virtio-balloon-pci,"
                                 "auto-floor=128M,auto-reserve=48M");
    QDict *info = query(qts);

    g_assert_false(qdict_get_bool(info, "enabled"));
    g_assert_cmpint(qdict_get_int(info, "floor"), ==, 128 * MiB);
    g_assert_cmpstr(qdict_get_str(info, "floor-origin"), ==, "'auto-floor'");
    g_assert_cmpint(qdict_get_int(info, "reserve"), ==, 48 * MiB);
    qobject_unref(info);

    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'floor': %" PRId64 "}}",
                             (int64_t)200 * MiB);
    info = query(qts);
    g_assert_false(qdict_get_bool(info, "enabled"));
    g_assert_cmpint(qdict_get_int(info, "floor"), ==, 200 * MiB);
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

static int64_t query_level_events(QTestState *qts, const char *level)
{
    QDict *info = query(qts);
    int64_t n = level_events(info, level);

    qobject_unref(info);
    return n;
}

static void assert_blocked_query(QTestState *qts, const char *status,
                                 const char *blocker)
{
    QDict *info = query(qts);

    assert_blocked(info, status, blocker);
    qobject_unref(info);
}

/* Management hands @efd over as @name for @level: getfd, balloon-auto-set */
static void handover_eventfd(QTestState *qts, int efd, const char *name,
                             const char *level)
{
    QDict *rsp = qtest_qmp_fds(qts, &efd, 1, "{'execute': 'getfd',"
                               " 'arguments': {'fdname': %s}}", name);

    g_assert_false(qdict_haskey(rsp, "error"));
    qobject_unref(rsp);
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'pressure-fd': %s,"
                             " 'pressure-fd-level': %s}}", name, level);
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
        "{'floor': 4294967296}", "'floor'",
        "{'inflate-low': 200}", "'inflate-low'",
        "{'reserve': 1073741824}", "'reserve'",
        "{'max-step': 1}", "'max-step'",
        "{'return-step': 1}", "'return-step'",
        "{'hold-ms': 4000000000}", "'hold-ms'",
        "{'cooldown-ms': 4000000000}", "'cooldown-ms'",
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
    int efd;                    /* host pressure, handed over as critical */
} BalloonDriver;

/* The driver finds the balloon in BALLOON_SLOT and makes it ready. */
static void driver_setup(BalloonDriver *d)
{
    QVirtioDevice *vdev;
    uint64_t features;
    int i;

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
    d->stats_addr = guest_alloc(&d->qs->alloc, STATS_BUF_SIZE);
    d->stats_held = false;
}

/* Boot machine @machine with the balloon and a driver playing the guest. */
/* Boot with the driver ready and d->efd handed over as critical pressure. */
static QTestState *driver_boot_on(BalloonDriver *d, const char *machine,
                                  const char *extra)
{
    d->efd = eventfd(0, 0);
    g_assert_cmpint(d->efd, >=, 0);
    d->qs = qtest_pc_boot("-M %s -m 1G -device virtio-balloon-pci,"
                          "id=balloon0,addr=%d.0,automatic=on,"
                          "pressure-fd=%d,pressure-fd-level=critical%s",
                          machine, BALLOON_SLOT, d->efd, extra);
    driver_setup(d);
    return d->qs->qts;
}

static QTestState *driver_boot(BalloonDriver *d, const char *extra)
{
    return driver_boot_on(d, "pc", extra);
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
    close(d->efd);
}

/*
 * Hand a statistics buffer of @len bytes to the device without waiting
 * for it to return the previous one (a driver that floods the queue).
 */
static void driver_kick_stats(BalloonDriver *d, const void *buf, size_t len)
{
    QTestState *qts = d->qs->qts;
    uint32_t head;

    g_assert_cmpuint(len, <=, STATS_BUF_SIZE);
    qtest_memwrite(qts, d->stats_addr, buf, len);
    head = qvirtqueue_add(qts, d->vq[2], d->stats_addr, len, false, false);
    qvirtqueue_kick(qts, &d->dev->vdev, d->vq[2], head);
    d->stats_held = true;
}

/*
 * Report statistics like a Linux guest: the buffer goes back and forth,
 * the device returning it at each poll (every 2 s once automatic is on).
 */
static void driver_send_raw_stats(BalloonDriver *d, const void *buf,
                                  size_t len)
{
    QTestState *qts = d->qs->qts;
    uint32_t head, used_len;

    if (d->stats_held) {
        qtest_clock_step(qts, STATS_POLL_NS);
        g_assert_true(qvirtqueue_get_buf(qts, d->vq[2], &head, &used_len));
    }
    driver_kick_stats(d, buf, len);
}

static void driver_send_stats(BalloonDriver *d, uint64_t available)
{
    struct virtio_balloon_stat st[] = {
        { cpu_to_le16(VIRTIO_BALLOON_S_MEMTOT), cpu_to_le64(1 * GiB) },
        { cpu_to_le16(VIRTIO_BALLOON_S_AVAIL), cpu_to_le64(available) },
        { cpu_to_le16(VIRTIO_BALLOON_S_MEMFREE), cpu_to_le64(available) },
    };

    driver_send_raw_stats(d, st, sizeof(st));
}

/* What the driver reads: the pages the device wants in the balloon. */
static uint32_t driver_num_pages(BalloonDriver *d)
{
    return qvirtio_config_readl(&d->dev->vdev,
                                offsetof(struct virtio_balloon_config,
                                         num_pages));
}

/*
 * What the driver writes: the pages it holds (config space 'actual').
 * libqos has no config write; the device config is in the modern BAR.
 */
static void driver_set_actual(BalloonDriver *d, uint32_t pages)
{
    g_assert_true(d->dev->vdev.features & (1ull << VIRTIO_F_VERSION_1));
    qpci_io_writel(d->dev->pdev, d->dev->bar,
                   d->dev->device_cfg_offset +
                   offsetof(struct virtio_balloon_config, actual), pages);
}

/* The driver follows the target at once. */
static void driver_follow(BalloonDriver *d)
{
    driver_set_actual(d, driver_num_pages(d));
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
    QTestState *qts = driver_boot(&d, "");
    QDict *ev, *data, *info, *last;
    int64_t new_target;

    driver_send_stats(&d, 800 * MiB);
    info = query(qts);
    g_assert_cmpint(qdict_get_int(qdict_get_qdict(info, "guest-stats"),
                                  "available"), ==, 800 * MiB);
    qobject_unref(info);

    pressure_event(qts, d.efd, "critical");
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
    QTestState *qts = driver_boot(&d, ",auto-dry-run=on,"
                                  "auto-cooldown-ms=0");
    QDict *info, *last = NULL, *data, *ev;
    int i;

    driver_send_stats(&d, 800 * MiB);
    for (i = 0; i < 20; i++) {
        pressure_event(qts, d.efd, "critical");
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
    QTestState *src = driver_boot(&d, "");
    QTestState *dst;
    g_autofree char *uri = migration_uri();
    QDict *before, *after, *last_before, *last_after, *source;
    g_autofree char *hmp = NULL;
    size_t i;

    driver_send_stats(&d, 800 * MiB);
    pressure_event(src, d.efd, "critical");
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
    /* the source host's pressure stayed there */
    g_assert_cmpstr(qdict_get_str(before, "level"), ==, "critical");
    g_assert_cmpstr(qdict_get_str(after, "level"), ==, "none");
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
    /* one descriptor per level: the command line's stays for critical */
    info = query(qts);
    src = qdict_get_qdict(info, "source");
    g_test_message("%s: %s", qdict_get_str(src, "path"),
                   qdict_get_str(src, "detail"));
    g_assert_cmpstr(qdict_get_str(src, "kind"), ==, "fd");
    g_assert_nonnull(strstr(qdict_get_str(src, "path"),
                            "psi (anon_inode:[eventfd])"));
    g_assert_nonnull(strstr(qdict_get_str(src, "detail"),
                            "psi (anon_inode:[eventfd]) at level low"));
    g_assert_nonnull(strstr(qdict_get_str(src, "detail"),
                            "at level critical"));
    qobject_unref(info);
    /* the properties keep what the command line said */
    fd_prop = qom_get_str(qts, "balloon0", "pressure-fd");
    g_assert_cmpstr(fd_prop, !=, "psi");
    pressure_event(qts, mgmt_efd, "low");
    pressure_event(qts, efd, "critical");

    /* a new one for a level replaces the old one */
    rsp = qtest_qmp_fds(qts, &mgmt_efd, 1, "{'execute': 'getfd',"
                        " 'arguments': {'fdname': 'psi2'}}");
    g_assert_false(qdict_haskey(rsp, "error"));
    qobject_unref(rsp);
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'pressure-fd': 'psi2',"
                             " 'pressure-fd-level': 'critical'}}");
    info = query(qts);
    src = qdict_get_qdict(info, "source");
    g_assert_cmpstr(qdict_get_str(src, "path"), ==,
                    "psi2 (anon_inode:[eventfd]), psi (anon_inode:[eventfd])");
    qobject_unref(info);

    /* off and on again: the descriptors are still there */
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'enabled': false}}");
    assert_set_refused(qts, "{'pressure-fd': 'psi'}", "needs automatic");
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'enabled': true}}");
    info = query(qts);
    src = qdict_get_qdict(info, "source");
    g_assert_cmpstr(qdict_get_str(src, "path"), ==,
                    "psi2 (anon_inode:[eventfd]), psi (anon_inode:[eventfd])");
    qobject_unref(info);
    pressure_event(qts, mgmt_efd, "critical");
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

/* Sum of the decision counters. */
static int64_t decisions_total(QDict *info)
{
    QListEntry *e;
    int64_t n = 0;

    QLIST_FOREACH_ENTRY(qdict_get_qlist(info, "decisions"), e) {
        n += qdict_get_int(qobject_to(QDict, qlist_entry_obj(e)), "count");
    }
    return n;
}

static int64_t query_int(QTestState *qts, const char *member)
{
    QDict *info = query(qts);
    int64_t v = qdict_get_int(info, member);

    qobject_unref(info);
    return v;
}

static int64_t query_decisions(QTestState *qts)
{
    QDict *info = query(qts);
    int64_t n = decisions_total(info);

    qobject_unref(info);
    return n;
}

static char *query_last_reason(QTestState *qts)
{
    QDict *info = query(qts);
    QDict *last = qdict_get_qdict(info, "last-decision");
    char *reason = g_strdup(last ? qdict_get_str(last, "reason") : "");

    qobject_unref(info);
    return reason;
}

static void balloon_to(QTestState *qts, int64_t size)
{
    qtest_qmp_assert_success(qts, "{'execute': 'balloon',"
                             " 'arguments': {'value': %" PRId64 "}}", size);
}

/* User plus system CPU time of @pid, in seconds. */
static double cpu_seconds(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", pid);
    g_autofree char *text = NULL;
    g_auto(GStrv) f = NULL;
    const char *after_comm;

    g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
    after_comm = strrchr(text, ')');
    g_assert_nonnull(after_comm);
    f = g_strsplit(after_comm + 2, " ", -1);
    /* utime and stime are fields 14 and 15; f[0] is field 3 */
    return (g_ascii_strtod(f[11], NULL) + g_ascii_strtod(f[12], NULL)) /
           sysconf(_SC_CLK_TCK);
}

/* QEMU does not spin: it uses little CPU over a second of idle time. */
static void assert_idle(QTestState *qts)
{
    double before = cpu_seconds(qtest_pid(qts));

    g_usleep(G_USEC_PER_SEC);
    g_assert_cmpfloat(cpu_seconds(qtest_pid(qts)) - before, <, 0.2);
}

/*
 * Days of virtual time with the balloon busy, held, and at rest.  The
 * policy timer takes nanosecond deadlines: a deadline in the wrong scale
 * never fires, and once the product overflowed (after ~2.5 h) it was
 * always expired and QEMU spun with the BQL held.
 */
static void test_long_uptime(void)
{
    BalloonDriver d;
    /* no PIT: its 18 Hz timer would dominate days of stepping */
    QTestState *qts = driver_boot_on(&d, "pc,pit=off", "");
    g_autofree char *reason = NULL;
    QDict *info;
    int day;

    /* Only the policy's own timer: statistics rarely over these days. */
    qtest_qmp_assert_success(qts, "{'execute': 'qom-set', 'arguments':"
                             " {'path': 'balloon0', 'property':"
                             " 'guest-stats-polling-interval',"
                             " 'value': 86400}}");
    /* Busy: the driver does not follow; the stuck timeout must fire. */
    balloon_to(qts, 768 * MiB);
    qtest_clock_step(qts, 9 * NS_PER_SEC);
    g_assert_cmpint(query_decisions(qts), ==, 0);
    qtest_clock_step(qts, 2 * NS_PER_SEC);
    reason = query_last_reason(qts);
    g_assert_cmpstr(reason, ==, "driver-stuck");
    g_assert_cmpint(query_int(qts, "target"), ==, 1 * GiB);

    /* Held for a day: nothing fires before its end, nothing spins. */
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'hold-ms': 86400000}}");
    balloon_to(qts, 512 * MiB);
    qtest_clock_step(qts, 3 * 3600 * NS_PER_SEC);
    info = query(qts);
    g_assert_cmpstr(qdict_get_str(info, "status"), ==, "held");
    g_assert_cmpint(decisions_total(info), ==, 1);
    qobject_unref(info);
    assert_idle(qts);
    qtest_clock_step(qts, 21 * 3600 * NS_PER_SEC + NS_PER_SEC);
    info = query(qts);
    g_assert_cmpstr(qdict_get_str(info, "status"), ==, "active");
    g_assert_cmpint(decisions_total(info), ==, 2);
    qobject_unref(info);
    g_free(reason);
    reason = query_last_reason(qts);
    g_assert_cmpstr(reason, ==, "driver-stuck");

    /* At rest for days, and the timer still works after them. */
    for (day = 0; day < 5; day++) {
        qtest_clock_step(qts, 24 * 3600 * NS_PER_SEC);
        g_assert_cmpint(query_decisions(qts), ==, 2);
    }
    assert_idle(qts);
    balloon_to(qts, 600 * MiB);
    qtest_clock_step(qts, 11 * NS_PER_SEC);
    g_assert_cmpint(query_decisions(qts), ==, 3);
    assert_idle(qts);
    driver_stop(&d);
}

/*
 * After a reset (reboot, or the driver resetting the device) the balloon
 * is empty: nothing may read the old size as a stuck driver and inflate
 * the new guest to it while it boots.
 */
static void test_reset(void)
{
    BalloonDriver d;
    QTestState *qts = driver_boot(&d, "");
    int64_t decisions, inflated;
    QDict *info;

    driver_send_stats(&d, 800 * MiB);
    pressure_event(qts, d.efd, "critical");
    driver_follow(&d);
    inflated = query_int(qts, "actual");
    g_assert_cmpint(inflated, <, 1 * GiB);
    decisions = query_decisions(qts);

    qvirtio_reset(&d.dev->vdev);
    info = query(qts);
    assert_blocked(info, "paused", "guest-driver");
    g_assert_cmpint(qdict_get_int(info, "actual"), ==, 1 * GiB);
    assert_rests_at(info, 1 * GiB);
    qobject_unref(info);

    /* booting: no driver for a while, then a driver without statistics */
    qtest_clock_step(qts, 60 * NS_PER_SEC);
    g_assert_cmpint(query_decisions(qts), ==, decisions);
    qvirtio_set_acknowledge(&d.dev->vdev);
    qvirtio_set_driver(&d.dev->vdev);
    qvirtio_set_features(&d.dev->vdev, d.dev->vdev.features);
    g_assert_cmpint(driver_num_pages(&d), ==, 0);
    qvirtio_set_driver_ok(&d.dev->vdev);
    qtest_clock_step(qts, 60 * NS_PER_SEC);
    info = query(qts);
    g_assert_cmpstr(qdict_get_str(info, "status"), ==, "active");
    g_assert_cmpint(decisions_total(info), ==, decisions);
    assert_rests_at(info, 1 * GiB);
    qobject_unref(info);
    g_assert_cmpint(driver_num_pages(&d), ==, 0);
    driver_stop(&d);
}

/* A machine reset: the guest is booting again, the balloon waits. */
static void test_system_reset(void)
{
    BalloonDriver d;
    QTestState *qts = driver_boot(&d, "");
    int64_t decisions;
    QDict *info;

    balloon_to(qts, 768 * MiB);
    driver_follow(&d);
    driver_send_stats(&d, 500 * MiB);
    pressure_event(qts, d.efd, "critical");
    driver_follow(&d);
    decisions = query_decisions(qts);
    qtest_qmp_assert_success(qts, "{'execute': 'system_reset'}");
    qtest_qmp_eventwait(qts, "RESET");
    info = query(qts);
    assert_blocked(info, "paused", "guest-driver");
    g_assert_cmpint(qdict_get_int(info, "actual"), ==, 1 * GiB);
    assert_rests_at(info, 768 * MiB);
    qobject_unref(info);
    qtest_clock_step(qts, 120 * NS_PER_SEC);
    g_assert_cmpint(query_decisions(qts), ==, decisions);
    g_assert_cmpint(query_int(qts, "target"), ==, 768 * MiB);
    driver_stop(&d);
}

/*
 * A size that is not a whole number of pages can never be reached: it is
 * rounded up, and nothing cycles between driver-stuck and guest-idle.
 */
static void test_unaligned_target(void)
{
    BalloonDriver d;
    QTestState *qts = driver_boot(&d, "");
    QDict *info;
    int i;

    balloon_to(qts, 768 * MiB + 1000);
    info = query(qts);
    assert_rests_at(info, 768 * MiB + 4096);
    qobject_unref(info);
    driver_follow(&d);
    g_assert_cmpint(query_int(qts, "actual"), ==, 768 * MiB + 4096);
    for (i = 0; i < 60; i++) {
        driver_send_stats(&d, 600 * MiB);
        driver_follow(&d);
    }
    g_assert_cmpint(query_decisions(qts), ==, 0);
    driver_stop(&d);
}

/* The balloon works on RAM plus DIMMs, like upstream's query-balloon. */
static void test_dimm_ram_base(void)
{
    QTestState *qts = qtest_init("-M pc -m 1G,slots=2,maxmem=4G "
                                 "-object memory-backend-ram,id=m1,size=512M "
                                 "-device pc-dimm,id=dimm1,memdev=m1 "
                                 "-device virtio-balloon-pci,id=balloon0,"
                                 "pressure-source=none");
    QDict *info, *rsp;

    balloon_to(qts, 256 * MiB);
    rsp = qtest_qmp_assert_success_ref(qts, "{'execute': 'query-balloon'}");
    g_assert_cmpint(qdict_get_int(rsp, "actual"), ==, 1536 * MiB);
    qobject_unref(rsp);
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'enabled': true}}");
    info = query(qts);
    g_assert_cmpint(qdict_get_int(info, "max"), ==, 1536 * MiB);
    g_assert_cmpint(qdict_get_int(info, "actual"), ==, 1536 * MiB);
    assert_rests_at(info, 256 * MiB);
    qobject_unref(info);
    qtest_quit(qts);
}

static int64_t fdset_count(QTestState *qts)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'query-fdsets'}");
    int64_t n = qlist_size(qdict_get_qlist(rsp, "return"));

    qobject_unref(rsp);
    return n;
}

/*
 * Descriptors: QEMU never adopts one of its own by number from QMP; an
 * fdset's dup is given back with qemu_close() so that removing the fdset
 * frees it; a descriptor closed by a disable is not reused.
 */
static void test_fd_ownership(void)
{
    int efd, set_efd = eventfd(0, 0);
    QTestState *qts = start_with_eventfd(&efd, "");
    QDict *rsp;

    assert_set_refused(qts, "{'pressure-fd': '0'}", "command line only");
    rsp = qtest_qmp_fds(qts, &set_efd, 1, "{'execute': 'add-fd',"
                        " 'arguments': {'fdset-id': 7}}");
    g_assert_false(qdict_haskey(rsp, "error"));
    qobject_unref(rsp);
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'pressure-fd': '/dev/fdset/7',"
                             " 'pressure-fd-level': 'low'}}");
    pressure_event(qts, set_efd, "low");
    /* off and on again: the descriptor stays with the device */
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'enabled': false}}");
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'enabled': true}}");
    pressure_event(qts, set_efd, "low");
    /* the device still holds its dup: the fdset stays until it goes */
    qtest_qmp_assert_success(qts, "{'execute': 'remove-fd',"
                             " 'arguments': {'fdset-id': 7}}");
    g_assert_cmpint(fdset_count(qts), ==, 1);
    qtest_quit(qts);
    close(efd);
    close(set_efd);

    /* a number from the command line survives a disable too */
    qts = start_with_eventfd(&efd, "");
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'enabled': false}}");
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'enabled': true}}");
    g_assert_true(qtest_qom_get_bool(qts, "balloon0", "automatic"));
    pressure_event(qts, efd, "critical");
    qtest_quit(qts);
    close(efd);
}

/* balloon-auto-set changes nothing when one of its steps fails. */
static void test_set_atomic(void)
{
    QTestState *qts = qtest_init("-M q35 -m 1G -device "
                                 "virtio-balloon-pci,id=balloon0");
    g_autofree char *fd = NULL;
    QDict *info;

    assert_set_refused(qts, "{'enabled': true, 'inflate-medium': 50,"
                       " 'floor': 314572800, 'pressure-fd': 'nosuchfd'}",
                       "nosuchfd");
    info = query(qts);
    g_assert_false(qdict_get_bool(info, "enabled"));
    qobject_unref(info);
    g_assert_cmpint(qom_get_int(qts, "balloon0", "inflate-medium"), ==, 10);
    g_assert_cmpint(qom_get_int(qts, "balloon0", "auto-floor"), ==, 0);
    fd = qom_get_str(qts, "balloon0", "pressure-fd");
    g_assert_cmpstr(fd, ==, "");
    qtest_quit(qts);
}

/* Where the migration stream keeps fields of the automatic subsection. */
#define WIRE_TARGET_OFFSET 8
#define WIRE_PINGPONG_UNTIL_OFFSET 72
#define WIRE_STATS_TIME_OFFSET 313
#define WIRE_LAST_REASON_OFFSET 404
/* the field's value before tampering is not known in advance */
#define ANY_VALUE UINT64_MAX

/*
 * Migrate to a file, change one field of the automatic subsection
 * (@offset from its first field, @len bytes big-endian from @expect to
 * @value) and load that into a fresh destination.  The load must fail
 * cleanly and leave the destination's own state alone.
 */
static void load_tampered_stream(size_t offset, size_t len, uint64_t expect,
                                 uint64_t value)
{
    static const char name[] = "virtio-balloon-device/auto";
    BalloonDriver d;
    QTestState *src = driver_boot(&d, "");
    QTestState *dst;
    g_autofree char *dir = g_dir_make_tmp("balloon-auto-XXXXXX", NULL);
    g_autofree char *file = g_build_filename(dir, "stream", NULL);
    g_autofree char *uri = g_strdup_printf("file:%s", file);
    g_autofree char *data = NULL;
    uint8_t *field;
    gsize size;
    char *sub;
    size_t i;
    QDict *info, *rsp;

    driver_send_stats(&d, 800 * MiB);
    pressure_event(src, d.efd, "critical");
    qtest_qmp_assert_success(src, "{'execute': 'migrate',"
                             " 'arguments': {'uri': %s}}", uri);
    wait_migration_completed(src);
    driver_stop(&d);

    g_assert_true(g_file_get_contents(file, &data, &size, NULL));
    sub = memmem(data, size, name, strlen(name));
    g_assert_nonnull(sub);
    /* name, then its version (be32), then the fields */
    field = (uint8_t *)sub + strlen(name) + 4 + offset;
    g_assert_cmpuint(field + len - (uint8_t *)data, <=, size);
    if (expect != ANY_VALUE) {
        g_assert_cmphex(ldn_be_p(field, len), ==, expect);
    }
    for (i = 0; i < len; i++) {
        field[i] = value >> (8 * (len - 1 - i));
    }
    g_assert_true(g_file_set_contents(file, data, size, NULL));

    dst = qtest_initf("-M pc -m 1G -device virtio-balloon-pci,id=balloon0,"
                      "addr=%d.0,automatic=on,pressure-source=none "
                      "-incoming defer", BALLOON_SLOT);
    qtest_qmp_assert_success(dst, "{'execute': 'migrate-incoming',"
                             " 'arguments': {'uri': %s,"
                             " 'exit-on-error': false}}", uri);
    for (;;) {
        const char *status;

        rsp = qtest_qmp_assert_success_ref(dst,
                                           "{'execute': 'query-migrate'}");
        status = qdict_get_try_str(rsp, "status");
        if (!g_strcmp0(status, "failed")) {
            qobject_unref(rsp);
            break;
        }
        g_assert_cmpstr(status, !=, "completed");
        qobject_unref(rsp);
        g_usleep(20 * 1000);
    }
    /* upstream's part of the stream was loaded, not automatic's */
    info = query(dst);
    g_assert_false(qdict_haskey(info, "last-decision"));
    g_assert_cmpint(qdict_get_int(info, "baseline"), ==, 1 * GiB);
    g_assert_cmpint(level_events(info, "critical"), ==, 0);
    qobject_unref(info);
    qtest_quit(dst);
    unlink(file);
    rmdir(dir);
}

static void test_migration_bad_enum(void)
{
    /* host-pressure (1) becomes 255: out of the table and the QAPI enum */
    load_tampered_stream(WIRE_LAST_REASON_OFFSET, 4, 1, 255);
}

static void test_migration_bad_size(void)
{
    /*
     * the target becomes larger than the VM: it was 1 GiB less 25% of the
     * 704 MiB spare (800 MiB available less a reserve and a half), 848 MiB
     */
    load_tampered_stream(WIRE_TARGET_OFFSET, 8, 848 * MiB, 64 * GiB);
}

/* Defaults fit any VM; only values the user gave are refused. */
static void test_small_vm(void)
{
    QTestState *qts = qtest_init("-M q35 -device virtio-balloon-pci,"
                                 "id=balloon0,automatic=true,"
                                 "pressure-source=none");
    QDict *info = query(qts), *rsp;

    g_assert_true(qdict_get_bool(info, "enabled"));
    g_assert_cmpint(qdict_get_int(info, "max"), ==, 128 * MiB);
    g_assert_cmpint(qdict_get_int(info, "floor"), <=, 128 * MiB);
    qobject_unref(info);
    qtest_quit(qts);
    qts = qtest_init("-M pc");
    rsp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments':"
                    " {'driver': 'virtio-balloon-pci', 'id': 'b2',"
                    " 'automatic': true, 'pressure-source': 'none',"
                    " 'auto-max-step': 268435456}}");
    g_test_message("%s", qdict_get_str(qdict_get_qdict(rsp, "error"),
                                       "desc"));
    g_assert_nonnull(strstr(qdict_get_str(qdict_get_qdict(rsp, "error"),
                                          "desc"), "auto-max-step"));
    qobject_unref(rsp);
    qtest_quit(qts);
}

/*
 * A second balloon and free-page-hint without an iothread fail realize
 * after the automatic balloon started and turned stats polling on: its
 * poll timer must not outlive the device.  The only virtual-clock timer
 * left is the first balloon's, every 2 s from 0: any other deadline is a
 * timer of the failed device.
 */
static void test_failed_realize(void)
{
    /*
     * The user's statistics poll is the one timer that runs without a
     * driver: anything else firing is a failed device's.
     */
    QTestState *qts = qtest_init("-M pc,pit=off,hpet=off -m 1G -nodefaults "
                                 "-device virtio-balloon-pci,id=balloon0,"
                                 "automatic=on,pressure-source=none,"
                                 "guest-stats-polling-interval=2");
    static const char *const args[] = {
        "{'driver': 'virtio-balloon-pci', 'id': 'b2', 'automatic': true,"
        " 'pressure-source': 'none'}",
        "{'driver': 'virtio-balloon-pci', 'id': 'b3', 'automatic': true,"
        " 'pressure-source': 'none', 'free-page-hint': true}",
    };
    size_t i;
    int n;

    /* past the first balloon's wake-up while the VM was not yet running */
    qtest_clock_step(qts, 5 * NS_PER_SEC);
    for (i = 0; i < ARRAY_SIZE(args); i++) {
        QDict *rsp;

        qtest_clock_step(qts, STATS_POLL_NS / 4);
        rsp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': %p}",
                        qobject_from_json(args[i], &error_abort));
        g_assert_true(qdict_haskey(rsp, "error"));
        qobject_unref(rsp);
        for (n = 0; n < 10; n++) {
            int64_t t = qtest_clock_step_next(qts);

            g_assert_cmpint(t % STATS_POLL_NS, ==, 0);
        }
    }
    g_assert_cmpint(query_int(qts, "max"), ==, 1 * GiB);
    qtest_quit(qts);
}

/* A cgroup of the test's own, in the v1 memory hierarchy or in v2. */
typedef struct TestCgroup {
    char *dir;
    pid_t child;
} TestCgroup;

static char *cgroup2_mount(void)
{
    g_autofree char *mounts = NULL;
    g_auto(GStrv) lines = NULL;
    int i;

    if (!g_file_get_contents("/proc/self/mounts", &mounts, NULL, NULL)) {
        return NULL;
    }
    lines = g_strsplit(mounts, "\n", -1);
    for (i = 0; lines[i]; i++) {
        g_auto(GStrv) f = g_strsplit(lines[i], " ", -1);

        if (g_strv_length(f) > 2 && !strcmp(f[2], "cgroup2")) {
            return g_strdup(f[1]);
        }
    }
    return NULL;
}

/* The v1 memcg this test runs in, or NULL. */
static char *own_v1_memcg(void)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    int i;

    if (!g_file_test("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                     G_FILE_TEST_EXISTS) ||
        !g_file_get_contents("/proc/self/cgroup", &text, NULL, NULL)) {
        return NULL;
    }
    lines = g_strsplit(text, "\n", -1);
    for (i = 0; lines[i]; i++) {
        g_auto(GStrv) f = g_strsplit(lines[i], ":", 3);

        if (g_strv_length(f) == 3 && strstr(f[1], "memory")) {
            return g_build_filename("/sys/fs/cgroup/memory", f[2], NULL);
        }
    }
    return NULL;
}

static void cgroup_write(const char *dir, const char *file, const char *val)
{
    g_autofree char *path = g_build_filename(dir, file, NULL);
    int fd = open(path, O_WRONLY);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(write(fd, val, strlen(val)), ==, strlen(val));
    close(fd);
}

#define CGROUP_PREFIX "qtest-balloon-auto-"

/* Cgroups an aborted run of this test left behind (its pid is gone). */
static void cgroup_remove_stale(const char *parent)
{
    GDir *d = g_dir_open(parent, 0, NULL);
    const char *name;

    while (d && (name = g_dir_read_name(d))) {
        g_autofree char *dir = g_build_filename(parent, name, NULL);
        g_autofree char *procs = g_build_filename(dir, "cgroup.procs", NULL);
        g_autofree char *pids = NULL;
        g_auto(GStrv) list = NULL;
        int i;

        if (!g_str_has_prefix(name, CGROUP_PREFIX) ||
            kill(atoi(name + strlen(CGROUP_PREFIX)), 0) == 0) {
            continue;
        }
        if (g_file_get_contents(procs, &pids, NULL, NULL)) {
            list = g_strsplit(pids, "\n", -1);
            for (i = 0; list[i]; i++) {
                if (atoi(list[i]) > 0) {
                    kill(atoi(list[i]), SIGKILL);
                }
            }
        }
        for (i = 0; i < 100 && rmdir(dir) < 0 && errno == EBUSY; i++) {
            g_usleep(10 * 1000);
        }
    }
    if (d) {
        g_dir_close(d);
    }
}

/* A new child cgroup; false (and the test skipped) if none can be made. */
static bool cgroup_create(TestCgroup *c, bool v2, uint64_t limit)
{
    g_autofree char *parent = v2 ? cgroup2_mount() : own_v1_memcg();
    g_autofree char *name = g_strdup_printf(CGROUP_PREFIX "%d", getpid());

    c->child = 0;
    c->dir = NULL;
    if (parent) {
        cgroup_remove_stale(parent);
        c->dir = g_build_filename(parent, name, NULL);
    }
    if (!parent || mkdir(c->dir, 0755) < 0) {
        g_test_skip(v2 ? "no cgroup v2 hierarchy to create a cgroup in" :
                    "no cgroup v1 memory controller to create a cgroup in");
        g_clear_pointer(&c->dir, g_free);
        return false;
    }
    if (limit) {
        g_autofree char *val = g_strdup_printf("%" PRIu64, limit);

        cgroup_write(c->dir, "memory.limit_in_bytes", val);
    }
    return true;
}

static uint64_t cgroup_read_u64(const char *dir, const char *file)
{
    g_autofree char *path = g_build_filename(dir, file, NULL);
    g_autofree char *text = NULL;

    g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
    return g_ascii_strtoull(text, NULL, 10);
}

static void cgroup_remove(TestCgroup *c)
{
    if (c->child > 0) {
        kill(c->child, SIGKILL);
        waitpid(c->child, NULL, 0);
    }
    if (c->dir) {
        while (rmdir(c->dir) < 0 && errno == EBUSY) {
            g_usleep(10 * 1000);
        }
        g_free(c->dir);
    }
}

/* Run a process holding @mib MiB of touched memory in the cgroup. */
static void cgroup_add_hog(TestCgroup *c, size_t mib)
{
    int ready[2];
    char byte;

    g_assert_cmpint(pipe(ready), ==, 0);
    c->child = fork();
    g_assert_cmpint(c->child, >=, 0);
    if (c->child == 0) {
        g_autofree char *pid = g_strdup_printf("%d", getpid());
        char *mem;

        /* gone with the test, and not holding its output open */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(STDOUT_FILENO);
        close(STDERR_FILENO);

        cgroup_write(c->dir, "cgroup.procs", pid);
        /* populated at once: charged to the cgroup */
        mem = mmap(NULL, mib * MiB, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        g_assert(mem != MAP_FAILED);
        g_assert_cmpint(write(ready[1], "x", 1), ==, 1);
        for (;;) {
            pause();
        }
    }
    close(ready[1]);
    g_assert_cmpint(read(ready[0], &byte, 1), ==, 1);
    close(ready[0]);
}

/*
 * Already above a usage threshold when the source opens: the event is
 * reported at once, not lost to the state being set up after it.
 */
static void test_first_threshold_event(void)
{
    TestCgroup c;
    QTestState *qts;
    uint64_t usage;
    g_autofree char *limit = NULL;
    QDict *info;

    if (!cgroup_create(&c, false, 0)) {
        return;
    }
    cgroup_add_hog(&c, 32);
    usage = cgroup_read_u64(c.dir, "memory.usage_in_bytes");
    /* usage at ~92% of the limit: past the 90% (medium) threshold */
    limit = g_strdup_printf("%" PRIu64, QEMU_ALIGN_UP(usage * 100 / 92,
                                                      4096));
    cgroup_write(c.dir, "memory.limit_in_bytes", limit);
    qts = qtest_initf("-M q35 -m 1G -device virtio-balloon-pci,id=balloon0,"
                      "automatic=on,pressure-source=cgroup-v1,"
                      "pressure-cgroup=%s", c.dir);
    info = query(qts);
    g_test_message("usage %" PRIu64 " limit %s: %s", usage, limit,
                   qdict_get_str(qdict_get_qdict(info, "source"), "detail"));
    g_assert_cmpint(level_events(info, "medium"), >=, 1);
    qobject_unref(info);
    qtest_quit(qts);
    cgroup_remove(&c);
}

/*
 * pressure-cgroup may only name a cgroup: a path that leads out of the
 * hierarchy (where a FIFO named like a cgroup file would block QEMU for
 * ever) is refused at once.
 */
static void test_cgroup_outside(void)
{
    static const char *const files[] = {
        "memory.pressure_level", "cgroup.event_control",
        "memory.limit_in_bytes", "memory.usage_in_bytes", "memory.pressure",
        "memory.soft_limit_in_bytes",
    };
    g_autofree char *dir = g_dir_make_tmp("balloon-auto-XXXXXX", NULL);
    g_autofree char *up = g_strdup_printf("../../../../../../../..%s", dir);
    QTestState *qts = qtest_init("-M pc -m 1G");
    const char *const kinds[] = { "cgroup-v1", "cgroup-v2" };
    const char *const paths[] = { dir, up };
    size_t i, k, p;

    for (i = 0; i < ARRAY_SIZE(files); i++) {
        g_autofree char *f = g_build_filename(dir, files[i], NULL);

        g_assert_cmpint(mkfifo(f, 0600), ==, 0);
    }
    for (k = 0; k < ARRAY_SIZE(kinds); k++) {
        for (p = 0; p < ARRAY_SIZE(paths); p++) {
            QDict *rsp = qtest_qmp(qts, "{'execute': 'device_add',"
                                   " 'arguments': {'driver':"
                                   " 'virtio-balloon-pci', 'id': 'b',"
                                   " 'automatic': true,"
                                   " 'pressure-source': %s,"
                                   " 'pressure-cgroup': %s}}",
                                   kinds[k], paths[p]);
            const char *desc = qdict_get_str(qdict_get_qdict(rsp, "error"),
                                             "desc");

            g_test_message("%s %s -> %s", kinds[k], paths[p], desc);
            g_assert_nonnull(strstr(desc, "pressure-source"));
            qobject_unref(rsp);
        }
    }
    qtest_quit(qts);
    for (i = 0; i < ARRAY_SIZE(files); i++) {
        g_autofree char *f = g_build_filename(dir, files[i], NULL);

        unlink(f);
    }
    rmdir(dir);
}

/* Descriptors open in @pid. */
static int count_fds(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/fd", pid);
    GDir *d = g_dir_open(path, 0, NULL);
    int n = 0;

    g_assert_nonnull(d);
    while (g_dir_read_name(d)) {
        n++;
    }
    g_dir_close(d);
    return n;
}

/* The descriptor limit that leaves @pid exactly @free descriptors. */
static rlim_t limit_leaving(pid_t pid, int free)
{
    g_autofree char *dir = g_strdup_printf("/proc/%d/fd", pid);
    rlim_t n;

    for (n = 0;; n++) {
        g_autofree char *path = g_strdup_printf("%s/%d", dir, (int)n);

        if (!g_file_test(path, G_FILE_TEST_EXISTS) && free-- == 0) {
            return n;
        }
    }
}

/* Hot-plug (or try to) a balloon in slot BALLOON_SLOT; true if it came. */
static bool plug_balloon(QTestState *qts, const char *props)
{
    g_autofree char *args = g_strdup_printf(
        "{'driver': 'virtio-balloon-pci', 'id': 'hb', 'addr': '%d.0',"
        " 'automatic': true, %s}", BALLOON_SLOT, props);
    QDict *rsp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': %p}",
                           qobject_from_json(args, &error_abort));
    bool ok = !qdict_haskey(rsp, "error");

    if (!ok) {
        g_test_message("device_add: %s",
                       qdict_get_str(qdict_get_qdict(rsp, "error"), "desc"));
        g_assert_nonnull(strstr(qdict_get_str(qdict_get_qdict(rsp, "error"),
                                              "desc"), "pressure-source"));
    }
    qobject_unref(rsp);
    return ok;
}

static void unplug_balloon(QTestState *qts)
{
    qpci_unplug_acpi_device_test(qts, "hb", BALLOON_SLOT);
}

/*
 * Hot-plug and unplug with every kind of source QEMU opens itself: no
 * descriptor stays behind.  Then the same under a descriptor limit that
 * makes each open in turn fail (EMFILE): every error path cleans up.
 */
static void run_fd_faults(bool v2)
{
    TestCgroup c;
    QTestState *qts;
    g_autofree char *props = NULL;
    pid_t pid;
    struct rlimit saved, lim;
    int before, extra, i, failed = 0;

    if (!cgroup_create(&c, v2, v2 ? 0 : 1 * GiB)) {
        return;
    }
    props = g_strdup_printf("'pressure-source': '%s', 'pressure-cgroup': '%s'",
                            v2 ? "cgroup-v2" : "cgroup-v1", c.dir);
    qts = qtest_init("-M pc -m 1G");
    pid = qtest_pid(qts);
    before = count_fds(pid);
    for (i = 0; i < 3; i++) {
        g_assert_true(plug_balloon(qts, props));
        g_assert_cmpint(count_fds(pid), >, before);
        unplug_balloon(qts);
        g_assert_cmpint(count_fds(pid), ==, before);
    }

    g_assert_cmpint(prlimit(pid, RLIMIT_NOFILE, NULL, &saved), ==, 0);
    for (extra = 0; extra < 16; extra++) {
        lim = saved;
        lim.rlim_cur = limit_leaving(pid, extra);
        g_assert_cmpint(prlimit(pid, RLIMIT_NOFILE, &lim, NULL), ==, 0);
        g_test_message("%d descriptors free", extra);
        if (plug_balloon(qts, props)) {
            g_assert_cmpint(prlimit(pid, RLIMIT_NOFILE, &saved, NULL), ==, 0);
            unplug_balloon(qts);
        } else {
            failed++;
            g_assert_cmpint(prlimit(pid, RLIMIT_NOFILE, &saved, NULL), ==, 0);
        }
        g_assert_cmpint(count_fds(pid), ==, before);
    }
    g_test_message("%d of 16 descriptor limits made realize fail", failed);
    g_assert_cmpint(failed, >=, 2);
    qtest_quit(qts);
    cgroup_remove(&c);
}

static void test_fd_faults_v1(void)
{
    run_fd_faults(false);
}

static void test_fd_faults_v2(void)
{
    run_fd_faults(true);
}

/* The watched cgroup is removed: the source says so and stops. */
static void run_cgroup_removed(bool v2)
{
    TestCgroup c;
    QTestState *qts;
    QDict *info;
    int i;

    if (!cgroup_create(&c, v2, v2 ? 0 : 1 * GiB)) {
        return;
    }
    qts = qtest_initf("-M q35 -m 1G -device virtio-balloon-pci,id=balloon0,"
                      "automatic=on,pressure-source=%s,pressure-cgroup=%s",
                      v2 ? "cgroup-v2" : "cgroup-v1", c.dir);
    info = query(qts);
    g_assert_false(qdict_get_bool(qdict_get_qdict(info, "source"), "lost"));
    qobject_unref(info);
    cgroup_remove(&c);
    for (i = 0; i < 500; i++) {
        bool lost;

        info = query(qts);
        lost = qdict_get_bool(qdict_get_qdict(info, "source"), "lost");
        qobject_unref(info);
        if (lost) {
            break;
        }
        g_usleep(10 * 1000);
    }
    g_assert_cmpint(i, <, 500);
    assert_idle(qts);
    qtest_quit(qts);
}

static void test_cgroup_removed_v1(void)
{
    run_cgroup_removed(false);
}

static void test_cgroup_removed_v2(void)
{
    run_cgroup_removed(true);
}

static void put_stat(struct virtio_balloon_stat *st, uint16_t tag,
                     uint64_t val)
{
    st->tag = cpu_to_le16(tag);
    st->val = cpu_to_le64(val);
}

/* What one inflate or deflate element may name: a page of 32-bit PFNs */
#define BALLOON_PAGE 4096
#define ELEMENT_PFNS (BALLOON_PAGE / sizeof(uint32_t))

/*
 * A guest hands over an inflate element of ELEMENT_PFNS + 1 PFNs.  The
 * device discards what the first ELEMENT_PFNS name and leaves the rest
 * alone: an element of megabytes of PFNs, which no driver sends, would
 * otherwise hold the BQL for as long as millions of discards take.
 */
static void test_inflate_element_bounded(void)
{
    BalloonDriver d;
    QTestState *qts = driver_boot(&d, "");
    size_t n = ELEMENT_PFNS + 1, i;
    g_autofree uint32_t *pfns = g_new(uint32_t, n);
    uint64_t pages, first, last, array;
    uint32_t head;

    pages = guest_alloc(&d.qs->alloc, 3 * BALLOON_PAGE);
    first = QEMU_ALIGN_UP(pages, BALLOON_PAGE);
    last = first + BALLOON_PAGE;
    qtest_memset(qts, first, 0xa5, 2 * BALLOON_PAGE);
    for (i = 0; i < n - 1; i++) {
        pfns[i] = cpu_to_le32(first / BALLOON_PAGE);
    }
    pfns[n - 1] = cpu_to_le32(last / BALLOON_PAGE);
    array = guest_alloc(&d.qs->alloc, n * sizeof(*pfns));
    qtest_memwrite(qts, array, pfns, n * sizeof(*pfns));

    head = qvirtqueue_add(qts, d.vq[0], array, n * sizeof(*pfns), false,
                          false);
    qvirtqueue_kick(qts, &d.dev->vdev, d.vq[0], head);
    qvirtio_wait_used_elem(qts, &d.dev->vdev, d.vq[0], head, NULL,
                           USED_TIMEOUT_US);

    /* discarded anonymous memory reads as zeroes */
    g_assert_cmphex(qtest_readq(qts, first), ==, 0);
    g_assert_cmphex(qtest_readq(qts, last), ==, 0xa5a5a5a5a5a5a5a5ULL);
    driver_stop(&d);
}

/*
 * A guest makes more elements available than its ring holds: every slot
 * names one element of a single PFN, and the available index is a ring
 * and one ahead.  No driver can do that (it would overwrite slots the
 * device has not read), and served one by one, the index lets a guest
 * hand over 65535 elements in one kick, each as costly as the last: the
 * device takes it as broken instead and serves none of them.
 */
static void test_avail_index_bounded(void)
{
    BalloonDriver d;
    QTestState *qts = driver_boot(&d, "");
    QVirtioDevice *vdev = &d.dev->vdev;
    QVirtQueue *vq = d.vq[0];
    uint64_t pages, page, array;
    uint32_t pfn, head, i;

    pages = guest_alloc(&d.qs->alloc, 2 * BALLOON_PAGE);
    page = QEMU_ALIGN_UP(pages, BALLOON_PAGE);
    qtest_memset(qts, page, 0xa5, BALLOON_PAGE);
    pfn = cpu_to_le32(page / BALLOON_PAGE);
    array = guest_alloc(&d.qs->alloc, sizeof(pfn));
    qtest_memwrite(qts, array, &pfn, sizeof(pfn));

    head = qvirtqueue_add(qts, vq, array, sizeof(pfn), false, false);
    for (i = 0; i < vq->size; i++) {
        qtest_writew(qts, vq->avail + 4 + 2 * i, head);
    }
    qtest_writew(qts, vq->avail + 2, vq->size + 1);
    vdev->bus->virtqueue_kick(vdev, vq);

    g_assert_cmphex(vdev->bus->get_status(vdev) &
                    VIRTIO_CONFIG_S_NEEDS_RESET, ==,
                    VIRTIO_CONFIG_S_NEEDS_RESET);
    g_assert_cmpuint(qtest_readw(qts, vq->used + 2), ==, 0);
    g_assert_cmphex(qtest_readq(qts, page), ==, 0xa5a5a5a5a5a5a5a5ULL);
    driver_stop(&d);
}

/*
 * A hostile guest: nonsense statistics, floods, an actual beyond RAM,
 * flapping and unaligned.  QEMU stays up, targets stay within [floor,
 * RAM], and decisions stay few.
 */
static void test_hostile_guest(void)
{
    BalloonDriver d;
    QTestState *qts = driver_boot(&d, "");
    struct virtio_balloon_stat st[8];
    uint8_t odd[STATS_BUF_SIZE];
    int64_t floor, decisions;
    QDict *info;
    int i;

    floor = query_int(qts, "floor");
    /* unknown tags, UINT64_MAX, available > total > RAM */
    put_stat(&st[0], 0x1234, 42);
    put_stat(&st[1], VIRTIO_BALLOON_S_AVAIL, 64 * GiB);
    put_stat(&st[2], VIRTIO_BALLOON_S_MEMTOT, 32 * GiB);
    put_stat(&st[3], VIRTIO_BALLOON_S_MEMFREE, UINT64_MAX);
    put_stat(&st[4], VIRTIO_BALLOON_S_MAJFLT, 1000);
    put_stat(&st[5], VIRTIO_BALLOON_S_SWAP_IN, UINT64_MAX - 1);
    put_stat(&st[6], VIRTIO_BALLOON_S_NR, 7);
    put_stat(&st[7], 0xffff, 0);
    driver_send_raw_stats(&d, st, sizeof(st));
    pressure_event(qts, d.efd, "critical");
    g_assert_cmpint(query_int(qts, "target"), >=, floor);
    /* counters going down, an odd length, a flood at one instant */
    put_stat(&st[4], VIRTIO_BALLOON_S_MAJFLT, 10);
    driver_send_raw_stats(&d, st, sizeof(st));
    memset(odd, 0xa5, sizeof(odd));
    driver_send_raw_stats(&d, odd, 13);
    decisions = query_decisions(qts);
    put_stat(&st[1], VIRTIO_BALLOON_S_AVAIL, 0);
    for (i = 0; i < 200; i++) {
        driver_kick_stats(&d, st, sizeof(st));
    }
    /* a flood at one instant counts as one sample */
    g_assert_cmpint(query_decisions(qts), <=, decisions + 1);

    /*
     * Resting at the floor, the guest claims more than RAM in its
     * balloon: read as an empty guest; the stuck driver's target stays at
     * the floor.
     */
    balloon_to(qts, floor);
    driver_follow(&d);
    driver_set_actual(&d, UINT32_MAX);
    qtest_clock_step(qts, 11 * NS_PER_SEC);
    info = query(qts);
    g_assert_cmpint(qdict_get_int(info, "actual"), ==, 0);
    g_assert_cmpint(qdict_get_int(info, "target"), ==, floor);
    g_assert_cmpint(qdict_get_int(info, "target"), <=, 1 * GiB);
    qobject_unref(info);
    g_assert_cmpint(driver_num_pages(&d), <=,
                    (1 * GiB - floor) >> VIRTIO_BALLOON_PFN_SHIFT);

    /* flapping and unaligned for a minute: few decisions */
    decisions = query_decisions(qts);
    for (i = 0; i < 600; i++) {
        driver_set_actual(&d, i % 2 ? 3 : 100003);
        qtest_clock_step(qts, NS_PER_SEC / 10);
        if (i % 20 == 0) {
            driver_send_raw_stats(&d, st, sizeof(st));
        }
    }
    info = query(qts);
    g_test_message("%" PRId64 " decisions in a minute of flapping",
                   decisions_total(info) - decisions);
    g_assert_cmpint(decisions_total(info) - decisions, <=, 30);
    g_assert_cmpint(qdict_get_int(info, "target"), >=, floor);
    g_assert_cmpint(qdict_get_int(info, "target"), <=, 1 * GiB);
    g_assert_cmpint(qdict_get_int(info, "target") % 4096, ==, 0);
    qobject_unref(info);
    driver_stop(&d);
}

/* Hot-unplugged, the device gives an fdset's dup back: the fdset goes. */
static void test_fdset_unplug(void)
{
    int efd = eventfd(0, 0);
    QTestState *qts = qtest_init("-M pc -m 1G");
    QDict *rsp;

    rsp = qtest_qmp_fds(qts, &efd, 1, "{'execute': 'add-fd',"
                        " 'arguments': {'fdset-id': 8}}");
    g_assert_false(qdict_haskey(rsp, "error"));
    qobject_unref(rsp);
    g_assert_true(plug_balloon(qts, "'pressure-source': 'none',"
                               " 'pressure-fd': '/dev/fdset/8'"));
    qtest_qmp_assert_success(qts, "{'execute': 'remove-fd',"
                             " 'arguments': {'fdset-id': 8}}");
    g_assert_cmpint(fdset_count(qts), ==, 1);
    unplug_balloon(qts);
    g_assert_cmpint(fdset_count(qts), ==, 0);
    qtest_quit(qts);
    close(efd);
}

/*
 * A DIMM goes and the guest reboots: the reset puts the balloon back at
 * the baseline, which cannot be more than the memory the VM has now (it
 * wrapped to a 16 TiB balloon).
 */
static void test_dimm_unplug_reset(void)
{
    QTestState *qts = qtest_init("-M pc -m 1G,slots=2,maxmem=4G "
                                 "-object memory-backend-ram,id=m1,size=512M "
                                 "-device pc-dimm,id=dimm1,memdev=m1 "
                                 "-device virtio-balloon-pci,id=balloon0,"
                                 "automatic=on,pressure-source=none");
    QDict *info;

    balloon_to(qts, 1280 * MiB);
    info = query(qts);
    assert_rests_at(info, 1280 * MiB);
    qobject_unref(info);

    /* the unplug request, then the guest's ACPI eject of slot 0 */
    qtest_qmp_device_del_send(qts, "dimm1");
    qtest_outl(qts, ACPI_MEMORY_HOTPLUG_BASE, 0);
    qtest_outl(qts, ACPI_MEMORY_HOTPLUG_BASE + 0x14, 8);
    qtest_qmp_eventwait(qts, "DEVICE_DELETED");
    qtest_qmp_assert_success(qts, "{'execute': 'system_reset'}");
    qtest_qmp_eventwait(qts, "RESET");
    info = query(qts);
    g_test_message("after unplug and reset: max %" PRId64 " target %" PRId64
                   " baseline %" PRId64, qdict_get_int(info, "max"),
                   qdict_get_int(info, "target"),
                   qdict_get_int(info, "baseline"));
    g_assert_cmpint(qdict_get_int(info, "max"), ==, 1 * GiB);
    assert_rests_at(info, 1 * GiB);
    qobject_unref(info);
    info = qtest_qmp_assert_success_ref(qts, "{'execute': 'query-balloon'}");
    g_assert_cmpint(qdict_get_int(info, "actual"), ==, 1 * GiB);
    qobject_unref(info);
    qtest_quit(qts);
}

/*
 * A PSI trigger handed over from a cgroup whose name contains "eventfd"
 * is polled as PSI, not read as an eventfd: no events out of nothing, no
 * spinning at the end of the file.
 */
static void test_psi_fd_named_eventfd(void)
{
    TestCgroup c;
    g_autofree char *child = NULL, *file = NULL;
    static const char trig[] = "some 150000 2000000";
    QTestState *qts;
    QDict *info, *rsp;
    int psi;

    if (!cgroup_create(&c, true, 0)) {
        return;
    }
    child = g_build_filename(c.dir, "machine-qemu-1-eventfd.scope", NULL);
    g_assert_cmpint(mkdir(child, 0755), ==, 0);
    file = g_build_filename(child, "memory.pressure", NULL);
    psi = open(file, O_RDWR | O_NONBLOCK);
    if (psi < 0) {
        g_test_skip("no memory.pressure in a cgroup v2 child (PSI off?)");
        rmdir(child);
        cgroup_remove(&c);
        return;
    }
    g_assert_cmpint(write(psi, trig, sizeof(trig)), ==, sizeof(trig));
    qts = qtest_init("-M q35 -m 1G -device virtio-balloon-pci,id=balloon0,"
                     "automatic=on,pressure-source=none");
    rsp = qtest_qmp_fds(qts, &psi, 1, "{'execute': 'getfd',"
                        " 'arguments': {'fdname': 'psi'}}");
    g_assert_false(qdict_haskey(rsp, "error"));
    qobject_unref(rsp);
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'pressure-fd': 'psi',"
                             " 'pressure-fd-level': 'medium'}}");
    info = query(qts);
    g_test_message("%s", qdict_get_str(qdict_get_qdict(info, "source"),
                                       "detail"));
    qobject_unref(info);
    assert_idle(qts);
    /* an idle cgroup stalls on nothing */
    g_assert_cmpint(query_level_events(qts, "medium"), ==, 0);
    qtest_quit(qts);
    close(psi);
    rmdir(child);
    cgroup_remove(&c);
}

/*
 * A descriptor handed over adds to the source QEMU opened itself; off and
 * on again, that source is opened again and the descriptor still counts.
 */
static void test_handed_fd_adds_to_source(void)
{
    int efd = eventfd(0, 0);
    g_autofree char *source = NULL;
    QTestState *qts;
    QDict *info, *src;

    if (access("/proc/pressure/memory", W_OK) != 0) {
        g_test_skip("no writable /proc/pressure/memory (PSI disabled?)");
        return;
    }
    qts = qtest_init("-M q35 -m 1G -device virtio-balloon-pci,id=balloon0,"
                     "automatic=on,pressure-source=system");
    handover_eventfd(qts, efd, "mgmt", "low");
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'enabled': false}}");
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'enabled': true}}");
    info = query(qts);
    src = qdict_get_qdict(info, "source");
    g_test_message("%s: %s", qdict_get_str(src, "kind"),
                   qdict_get_str(src, "detail"));
    g_assert_cmpstr(qdict_get_str(src, "kind"), ==, "system");
    g_assert_nonnull(strstr(qdict_get_str(src, "detail"),
                            "plus descriptors handed over by management"));
    qobject_unref(info);
    source = qom_get_str(qts, "balloon0", "pressure-source");
    g_assert_cmpstr(source, ==, "system");
    pressure_event(qts, efd, "low");
    qtest_quit(qts);
    close(efd);
}

/*
 * A driver that becomes ready is looked at once it is: a target it does
 * not follow ends as driver-stuck even with no statistics at all.
 */
static void test_driver_ready_evaluates(void)
{
    BalloonDriver d = { .efd = eventfd(0, 0) };
    QTestState *qts;
    g_autofree char *reason = NULL;

    d.qs = qtest_pc_boot("-M pc -m 1G -device virtio-balloon-pci,"
                         "id=balloon0,addr=%d.0,automatic=on,"
                         "pressure-fd=%d,guest-stats-polling-interval=86400",
                         BALLOON_SLOT, d.efd);
    qts = d.qs->qts;
    /* the baseline moves while the guest is still booting */
    balloon_to(qts, 768 * MiB);
    driver_setup(&d);
    qtest_clock_step(qts, 11 * NS_PER_SEC);
    reason = query_last_reason(qts);
    g_assert_cmpstr(reason, ==, "driver-stuck");
    driver_stop(&d);
}

/*
 * An outgoing migration takes long: a guest that runs short of memory
 * meanwhile still gets it back (it only adds pages to send); nothing
 * else moves the balloon.
 */
static void test_deflate_during_migration(void)
{
    BalloonDriver d;
    QTestState *qts = driver_boot(&d, "");
    QDict *info;
    int64_t target;

    driver_send_stats(&d, 800 * MiB);
    pressure_event(qts, d.efd, "critical");
    driver_follow(&d);
    target = query_int(qts, "target");
    g_assert_cmpint(target, <, 1 * GiB);
    qtest_qmp_assert_success(qts, "{'execute': 'migrate-set-parameters',"
                             " 'arguments': {'max-bandwidth': 4096}}");
    qtest_qmp_assert_success(qts, "{'execute': 'migrate', 'arguments':"
                             " {'uri': 'exec:cat > /dev/null'}}");
    info = query(qts);
    assert_blocked(info, "paused", "migration");
    qobject_unref(info);
    /* host pressure waits ... */
    pressure_event(qts, d.efd, "critical");
    g_assert_cmpint(query_int(qts, "target"), ==, target);
    /* ... the guest does not */
    driver_send_stats(&d, 16 * MiB);
    info = query(qts);
    g_test_message("target %" PRId64 " -> %" PRId64, target,
                   qdict_get_int(info, "target"));
    g_assert_cmpint(qdict_get_int(info, "target"), >, target);
    g_assert_cmpint(reason_count(info, "guest-pressure"), ==, 1);
    qobject_unref(info);
    qtest_qmp_assert_success(qts, "{'execute': 'migrate_cancel'}");
    driver_stop(&d);
}

/*
 * balloon-auto-set names its own arguments in errors (see also
 * set-command), and a failed
 * enable leaves the descriptor it was given with the monitor.  A bad
 * property is refused at realize even with automatic off.
 */
static void test_set_errors(void)
{
    int efd = eventfd(0, 0);
    QTestState *qts = qtest_init("-M pc -m 1G -device virtio-balloon-pci,"
                                 "id=balloon0,pressure-source=cgroup-v1,"
                                 "pressure-cgroup=/no/such/cgroup");
    QDict *rsp;

    assert_set_refused(qts, "{'floor': 2147483648}", "'floor'");
    assert_set_refused(qts, "{'max-step': 1024}", "'max-step'");
    assert_set_refused(qts, "{'calm-time-ms': 4000000000}", "'calm-time-ms'");
    rsp = qtest_qmp_fds(qts, &efd, 1, "{'execute': 'getfd',"
                        " 'arguments': {'fdname': 'mgmt'}}");
    g_assert_false(qdict_haskey(rsp, "error"));
    qobject_unref(rsp);
    assert_set_refused(qts, "{'enabled': true, 'pressure-fd': 'mgmt'}",
                       "pressure-source");
    /* still the monitor's: it can close it */
    qtest_qmp_assert_success(qts, "{'execute': 'closefd',"
                             " 'arguments': {'fdname': 'mgmt'}}");
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'hold-ms': 1000}}");
    rsp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments':"
                    " {'driver': 'virtio-balloon-pci', 'id': 'b2',"
                    " 'psi-window-ms': 100}}");
    g_assert_nonnull(strstr(qdict_get_str(qdict_get_qdict(rsp, "error"),
                                          "desc"), "'psi-window-ms'"));
    qobject_unref(rsp);
    qtest_quit(qts);
    close(efd);
}

/*
 * Waiting for a driver costs no timer: statistics are polled only while
 * one can answer, so a year of virtual time passes in one step.
 */
static void test_no_driver_no_polling(void)
{
    BalloonDriver d = { .efd = eventfd(0, 0) };
    QTestState *qts;

    d.qs = qtest_pc_boot("-M pc,pit=off -m 1G -device virtio-balloon-pci,"
                         "id=balloon0,addr=%d.0,automatic=on,"
                         "pressure-fd=%d", BALLOON_SLOT, d.efd);
    qts = d.qs->qts;
    g_assert_cmpint(qom_get_int(qts, "balloon0",
                                "guest-stats-polling-interval"), ==, 0);
    qtest_clock_step(qts, 365 * 24 * 3600 * NS_PER_SEC);
    assert_blocked_query(qts, "paused", "guest-driver");
    driver_setup(&d);
    qtest_clock_step(qts, 100 * 1000 * 1000);
    g_assert_cmpint(qom_get_int(qts, "balloon0",
                                "guest-stats-polling-interval"), >, 0);
    qvirtio_reset(&d.dev->vdev);
    g_assert_cmpint(qom_get_int(qts, "balloon0",
                                "guest-stats-polling-interval"), ==, 0);
    driver_stop(&d);
}

/* Whether the device has handed the statistics buffer back (a request). */
static bool driver_stats_asked(BalloonDriver *d)
{
    uint32_t head, used_len;

    if (!qvirtqueue_get_buf(d->qs->qts, d->vq[2], &head, &used_len)) {
        return false;
    }
    d->stats_held = false;
    return true;
}

/*
 * The driver answers with @available bytes; the device asks again @ms
 * milliseconds later, not 50 ms before.
 */
static void assert_stats_asked_after(BalloonDriver *d, uint64_t available,
                                     int64_t ms)
{
    const int64_t ms_ns = NS_PER_SEC / 1000;

    driver_send_stats(d, available);
    qtest_clock_step(d->qs->qts, (ms - 50) * ms_ns);
    g_assert_false(driver_stats_asked(d));
    qtest_clock_step(d->qs->qts, 50 * ms_ns);
    g_assert_true(driver_stats_asked(d));
}

/*
 * Below QEMU's one-second polling: a guest whose use grows fast is asked
 * for its statistics 200 ms after each answer; one that an allocator at
 * the fastest plausible rate (512 MiB/s) could run out of memory within
 * two seconds, every second; a calm guest every 2 s.  (The driver reports
 * a total of 1 GiB: used memory is what is missing of it.)
 */
static void test_stats_asked_faster(void)
{
    BalloonDriver d = { .efd = eventfd(0, 0) };

    d.qs = qtest_pc_boot("-M pc -m 4G -device virtio-balloon-pci,"
                         "id=balloon0,addr=%d.0,automatic=on,"
                         "pressure-fd=%d", BALLOON_SLOT, d.efd);
    driver_setup(&d);

    assert_stats_asked_after(&d, 3 * GiB, 2000);
    assert_stats_asked_after(&d, 1 * GiB, 1000);
    /* 724 MiB more in use within a second, and then still growing fast */
    assert_stats_asked_after(&d, 300 * MiB, 200);
    assert_stats_asked_after(&d, 300 * MiB, 200);
    g_assert_cmpint(qom_get_int(d.qs->qts, "balloon0",
                                "guest-stats-polling-interval"), ==, 1);
    /* calm again: back to every 2 s */
    assert_stats_asked_after(&d, 3 * GiB, 2000);
    driver_stop(&d);
}

/*
 * Times in the migration stream are past events on the VM's clock: a
 * sample from the far future (which would blind the device to guest
 * pressure) or a raised floor that never ends is refused.
 */
static void test_migration_bad_times(void)
{
    load_tampered_stream(WIRE_STATS_TIME_OFFSET, 8, ANY_VALUE, INT64_MAX);
    load_tampered_stream(WIRE_PINGPONG_UNTIL_OFFSET, 8,
                         (uint64_t)(INT64_MIN / 2), INT64_MAX / 2);
}

/*
 * Host growth is timed on the clock the readings were taken on.  Under
 * qtest the virtual clock moves only when stepped (like a stopped VM's):
 * 20 MiB that arrived over 3 s of real time, read 0.6 s apart on the
 * virtual clock, is under 7 MiB/s, not 33.
 */
static void test_host_growth_real_clock(void)
{
    TestCgroup c;
    BalloonDriver d;
    g_autofree char *extra = NULL, *limit = NULL;
    QTestState *qts;
    QDict *info, *host;
    uint64_t usage;
    pid_t first;

    if (!cgroup_create(&c, false, 0)) {
        return;
    }
    cgroup_add_hog(&c, 200);
    first = c.child;
    usage = cgroup_read_u64(c.dir, "memory.usage_in_bytes");
    /* at 85% of the limit: the source reads it every 250 ms */
    limit = g_strdup_printf("%" PRIu64, QEMU_ALIGN_UP(usage * 100 / 85,
                                                      4096));
    cgroup_write(c.dir, "memory.limit_in_bytes", limit);
    extra = g_strdup_printf(",pressure-source=cgroup-v1,pressure-cgroup=%s",
                            c.dir);
    qts = driver_boot(&d, extra);
    driver_send_stats(&d, 800 * MiB);
    info = query(qts);
    g_assert_true(qdict_haskey(info, "host"));
    qobject_unref(info);

    cgroup_add_hog(&c, 20);
    g_usleep(3 * G_USEC_PER_SEC);
    qtest_clock_step(qts, 600 * 1000 * 1000);
    g_usleep(500 * 1000);
    info = query(qts);
    host = qdict_get_qdict(info, "host");
    g_test_message("usage %" PRId64 " MiB of %" PRId64 " MiB, growing %"
                   PRId64 " KiB/s", qdict_get_int(host, "usage") / MiB,
                   qdict_get_int(host, "limit") / MiB,
                   qdict_get_int(host, "growth-rate") / KiB);
    g_assert_cmpint(qdict_get_int(host, "growth-rate"), <, 10 * MiB);
    qobject_unref(info);
    driver_stop(&d);
    kill(first, SIGKILL);
    waitpid(first, NULL, 0);
    cgroup_remove(&c);
}

/*
 * Cgroup v1 signals a threshold crossing at once, but memory only goes
 * back below the band under the setpoint (75% of the limit): while usage
 * sits in the band the source must still be read, or its last reading
 * ages and the return would walk on blind.  Real time passes between the
 * virtual clock's steps, as for a running VM.
 */
static void test_v1_return_waits_for_band(void)
{
    TestCgroup c;
    BalloonDriver d;
    g_autofree char *extra = NULL, *limit = NULL;
    QTestState *qts;
    QDict *info;
    uint64_t kept, usage, lim;
    int64_t target;
    pid_t held;
    int i;

    if (!cgroup_create(&c, false, 0)) {
        return;
    }
    cgroup_add_hog(&c, 60);
    held = c.child;
    kept = cgroup_read_u64(c.dir, "memory.usage_in_bytes");
    cgroup_add_hog(&c, 6);
    usage = cgroup_read_u64(c.dir, "memory.usage_in_bytes");
    /* 86% of the limit with both hogs, in the band with one */
    lim = QEMU_ALIGN_UP(usage * 100 / 86, 4096);
    g_test_message("%" PRIu64 " and %" PRIu64 " of %" PRIu64 " KiB",
                   usage / KiB, kept / KiB, lim / KiB);
    g_assert_cmpuint(kept * 1000 / lim, >, 760);
    g_assert_cmpuint(kept * 1000 / lim, <, 790);
    limit = g_strdup_printf("%" PRIu64, lim);
    cgroup_write(c.dir, "memory.limit_in_bytes", limit);
    extra = g_strdup_printf(",pressure-source=cgroup-v1,pressure-cgroup=%s",
                            c.dir);
    qts = driver_boot(&d, extra);
    driver_send_stats(&d, 800 * MiB);
    driver_send_stats(&d, 800 * MiB);
    g_assert_cmpint(query_int(qts, "target"), <, 1 * GiB);
    driver_follow(&d);

    /* into the band: nothing goes back there, however long it lasts */
    kill(c.child, SIGKILL);
    waitpid(c.child, NULL, 0);
    target = query_int(qts, "target");
    for (i = 0; i < 10; i++) {
        g_usleep(300 * 1000);
        driver_follow(&d);
        driver_send_stats(&d, 800 * MiB);
    }
    info = query(qts);
    g_test_message("%" PRId64 " MiB in use, target %" PRId64 " MiB",
                   qdict_get_int(qdict_get_qdict(info, "host"), "usage") /
                   MiB, qdict_get_int(info, "target") / MiB);
    g_assert_cmpint(reason_count(info, "host-calm"), ==, 0);
    g_assert_cmpint(qdict_get_int(info, "target"), ==, target);
    qobject_unref(info);

    /* below it: memory goes back */
    kill(held, SIGKILL);
    waitpid(held, NULL, 0);
    for (i = 0; i < 4; i++) {
        g_usleep(300 * 1000);
        driver_send_stats(&d, 800 * MiB);
    }
    g_assert_cmpint(query_int(qts, "target"), >, target);
    driver_stop(&d);
    c.child = 0;
    cgroup_remove(&c);
}

/*
 * The host's own memory as the source: its usage, MemTotal and the
 * setpoint in the query; the setpoint validated and changed at run time.
 */
static void test_host_source(void)
{
    QTestState *qts = qtest_init("-M q35 -m 1G -device virtio-balloon-pci,"
                                 "id=balloon0,automatic=on,"
                                 "pressure-source=host,host-setpoint=70");
    BalloonDriver d;
    QDict *info, *host, *src, *rsp;
    g_autofree char *hmp = NULL, *out = NULL;
    int64_t limit;

    info = query(qts);
    src = qdict_get_qdict(info, "source");
    g_test_message("%s: %s", qdict_get_str(src, "path"),
                   qdict_get_str(src, "detail"));
    g_assert_cmpstr(qdict_get_str(src, "kind"), ==, "host");
    g_assert_cmpstr(qdict_get_str(src, "path"), ==, "/proc/meminfo");
    g_assert_nonnull(strstr(qdict_get_str(src, "detail"),
                            "host memory in use"));
    qobject_unref(info);
    assert_set_refused(qts, "{'host-setpoint': 5}", "'host-setpoint'");
    assert_set_refused(qts, "{'host-setpoint': 95}", "'host-setpoint'");
    qtest_quit(qts);

    /* with a driver the policy has read the host */
    qts = driver_boot(&d, ",pressure-source=host,host-setpoint=70");
    driver_send_stats(&d, 800 * MiB);
    info = query(qts);
    host = qdict_get_qdict(info, "host");
    limit = qdict_get_int(host, "limit");
    g_test_message("host: %" PRId64 " of %" PRId64 " MiB, setpoint %" PRId64,
                   qdict_get_int(host, "usage") / MiB, limit / MiB,
                   qdict_get_int(host, "setpoint") / MiB);
    g_assert_cmpint(qdict_get_int(host, "setpoint"), ==, limit / 1000 * 700);
    hmp = g_strdup_printf("host: %" PRId64 " of %" PRId64
                          " MiB in use, setpoint %" PRId64 " MiB",
                          qdict_get_int(host, "usage") / MiB, limit / MiB,
                          qdict_get_int(host, "setpoint") / MiB);
    out = qtest_hmp(qts, "info balloon");
    g_test_message("%s", out);
    g_assert_nonnull(strstr(out, hmp));
    qobject_unref(info);
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'host-setpoint': 85}}");
    g_assert_cmpint(qom_get_int(qts, "balloon0", "host-setpoint"), ==, 85);
    /* taken at the next reading (at most 10 s when far from it) */
    qtest_clock_step(qts, STATS_POLL_NS);
    driver_send_stats(&d, 800 * MiB);
    info = query(qts);
    host = qdict_get_qdict(info, "host");
    g_assert_cmpint(qdict_get_int(host, "setpoint"), ==, limit / 1000 * 850);
    qobject_unref(info);
    rsp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments':"
                    " {'driver': 'virtio-balloon-pci', 'id': 'b2',"
                    " 'host-setpoint': 99}}");
    g_assert_nonnull(strstr(qdict_get_str(qdict_get_qdict(rsp, "error"),
                                          "desc"), "'host-setpoint'"));
    qobject_unref(rsp);
    driver_stop(&d);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    qtest_add_func("balloon-auto/disabled-by-default",
                   test_disabled_by_default);
    qtest_add_func("balloon-auto/off-reports-tunables",
                   test_off_reports_tunables);
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
    qtest_add_func("balloon-auto/long-uptime", test_long_uptime);
    qtest_add_func("balloon-auto/reset", test_reset);
    qtest_add_func("balloon-auto/system-reset", test_system_reset);
    qtest_add_func("balloon-auto/unaligned-target", test_unaligned_target);
    qtest_add_func("balloon-auto/dimm-ram-base", test_dimm_ram_base);
    qtest_add_func("balloon-auto/fd-ownership", test_fd_ownership);
    qtest_add_func("balloon-auto/set-atomic", test_set_atomic);
    qtest_add_func("balloon-auto/migration-bad-enum",
                   test_migration_bad_enum);
    qtest_add_func("balloon-auto/migration-bad-size",
                   test_migration_bad_size);
    qtest_add_func("balloon-auto/small-vm", test_small_vm);
    qtest_add_func("balloon-auto/failed-realize", test_failed_realize);
    qtest_add_func("balloon-auto/first-threshold-event",
                   test_first_threshold_event);
    qtest_add_func("balloon-auto/cgroup-outside", test_cgroup_outside);
    qtest_add_func("balloon-auto/fd-faults-v1", test_fd_faults_v1);
    qtest_add_func("balloon-auto/fd-faults-v2", test_fd_faults_v2);
    qtest_add_func("balloon-auto/cgroup-removed-v1", test_cgroup_removed_v1);
    qtest_add_func("balloon-auto/cgroup-removed-v2", test_cgroup_removed_v2);
    qtest_add_func("balloon-auto/hostile-guest", test_hostile_guest);
    qtest_add_func("balloon-auto/inflate-element-bounded",
                   test_inflate_element_bounded);
    qtest_add_func("balloon-auto/avail-index-bounded",
                   test_avail_index_bounded);
    qtest_add_func("balloon-auto/fdset-unplug", test_fdset_unplug);
    qtest_add_func("balloon-auto/dimm-unplug-reset", test_dimm_unplug_reset);
    qtest_add_func("balloon-auto/psi-fd-named-eventfd",
                   test_psi_fd_named_eventfd);
    qtest_add_func("balloon-auto/handed-fd-adds-to-source",
                   test_handed_fd_adds_to_source);
    qtest_add_func("balloon-auto/driver-ready-evaluates",
                   test_driver_ready_evaluates);
    qtest_add_func("balloon-auto/deflate-during-migration",
                   test_deflate_during_migration);
    qtest_add_func("balloon-auto/set-errors", test_set_errors);
    qtest_add_func("balloon-auto/stats-asked-faster",
                   test_stats_asked_faster);
    qtest_add_func("balloon-auto/no-driver-no-polling",
                   test_no_driver_no_polling);
    qtest_add_func("balloon-auto/migration-bad-times",
                   test_migration_bad_times);
    qtest_add_func("balloon-auto/host-growth-real-clock",
                   test_host_growth_real_clock);
    qtest_add_func("balloon-auto/host-source", test_host_source);
    qtest_add_func("balloon-auto/v1-return-waits-for-band",
                   test_v1_return_waits_for_band);
    return g_test_run();
}
