/*
 * QTest cases for the automatic virtio-balloon: properties, QMP, HMP
 *
 * Host pressure is delivered through an eventfd handed to QEMU
 * (pressure-fd), so the tests are deterministic.
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/eventfd.h>
#include "qemu/units.h"
#include "libqtest.h"
#include "qapi/error.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "qobject/qjson.h"

static int64_t qom_get_int(QTestState *qts, const char *path,
                           const char *prop)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'qom-get', 'arguments':"
                           " {'path': %s, 'property': %s}}", path, prop);
    int64_t v = qdict_get_int(rsp, "return");

    qobject_unref(rsp);
    return v;
}

static QDict *query(QTestState *qts)
{
    return qtest_qmp_assert_success_ref(qts,
                                        "{'execute': 'query-balloon-auto'}");
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

static int64_t level_events(QDict *info, const char *level)
{
    QList *events = qdict_get_qlist(info, "events");
    QListEntry *e;

    QLIST_FOREACH_ENTRY(events, e) {
        QDict *c = qobject_to(QDict, qlist_entry_obj(e));

        if (!strcmp(qdict_get_str(c, "level"), level)) {
            return qdict_get_int(c, "events");
        }
    }
    g_assert_not_reached();
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
    g_assert_cmpstr(qdict_get_str(info, "status"), ==, "active");
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
    g_assert_cmpstr(qdict_get_str(info, "status"), ==, "active");
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
    g_assert_cmpint(qdict_get_int(info, "baseline"), ==, 768 * MiB);
    g_assert_cmpint(qdict_get_int(info, "target"), ==, 768 * MiB);
    qobject_unref(info);
    qtest_quit(qts);
    close(efd);
}

static void test_set_command(void)
{
    int efd;
    QTestState *qts = start_with_eventfd(&efd, "");
    QDict *info, *rsp;
    static const char *const bad[] = {
        "{'floor': 4294967296}", "auto-floor",
        "{'inflate-low': 200}", "inflate-low",
        "{'reserve': 1073741824}", "auto-reserve",
        "{'max-step': 1}", "auto-max-step",
        "{'return-step': 0}", "auto-return-step",
        "{'hold-ms': 4000000000}", "hold-ms",
        "{'cooldown-ms': 4000000000}", "auto-cooldown-ms",
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(bad); i += 2) {
        const char *desc;

        rsp = qtest_qmp(qts, "{'execute': 'balloon-auto-set',"
                        " 'arguments': %p}",
                        qobject_from_json(bad[i], &error_abort));
        g_assert_true(qdict_haskey(rsp, "error"));
        desc = qdict_get_str(qdict_get_qdict(rsp, "error"), "desc");
        g_test_message("%s -> %s", bad[i], desc);
        g_assert_nonnull(strstr(desc, bad[i + 1]));
        qobject_unref(rsp);
    }

    /* Tunables take effect and qom-get agrees with the query. */
    qtest_qmp_assert_success(qts, "{'execute': 'balloon-auto-set',"
                             " 'arguments': {'floor': %" PRId64 ","
                             " 'inflate-medium': 20, 'dry-run': true}}",
                             (int64_t)(300 * MiB));
    info = query(qts);
    g_assert_cmpint(qdict_get_int(info, "floor"), ==, 300 * MiB);
    g_assert_cmpstr(qdict_get_str(info, "status"), ==, "dry-run");
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
    g_assert_nonnull(strstr(out, "automatic: active"));
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
    return g_test_run();
}
