/*
 * Fuzzing target of the automatic virtio-balloon
 *
 * The input plays a hostile guest driver and a hostile management at
 * once: statistics buffers, inflate/deflate/report page lists, the
 * driver's actual size and status, virtual time, host pressure events
 * (through an eventfd handed to the device as pressure-fd), balloon and
 * balloon-auto-set requests.  After every step the automatic balloon's
 * state must still make sense (query-balloon-auto invariants).
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/eventfd.h>
#include "qemu/units.h"
#include "qemu/timer.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-balloon-auto.h"
#include "qapi/qapi-commands-machine.h"
#include "tests/qtest/libqtest.h"
#include "tests/qtest/libqos/libqos-pc.h"
#include "tests/qtest/libqos/malloc-pc.h"
#include "tests/qtest/libqos/pci-pc.h"
#include "tests/qtest/libqos/virtio.h"
#include "tests/qtest/libqos/virtio-pci.h"
#include "standard-headers/linux/virtio_balloon.h"
#include "standard-headers/linux/virtio_config.h"
#include "fuzz.h"

#define BALLOON_SLOT 4
#define RAM_SIZE (512 * MiB)
#define NUM_VQS 4               /* inflate, deflate, stats, reporting */
#define MAX_BUF 256

enum {
    OP_STATS,                   /* len, bytes: a statistics buffer */
    OP_PAGES,                   /* queue, count, u32 pfns */
    OP_ACTUAL,                  /* u32: the driver's actual */
    OP_CLOCK,                   /* u16: virtual time, 10 ms units */
    OP_PRESSURE,                /* one host pressure event */
    OP_BALLOON,                 /* u32: balloon command, pages */
    OP_SET,                     /* flags, values: balloon-auto-set */
    OP_STATUS,                  /* u8: device status (reset, ready...) */
    OP__MAX,
};

static int pressure_efd = -1;

typedef struct Input {
    const unsigned char *data;
    size_t size;
} Input;

static bool take(Input *in, void *out, size_t len)
{
    if (in->size < len) {
        in->size = 0;
        return false;
    }
    memcpy(out, in->data, len);
    in->data += len;
    in->size -= len;
    return true;
}

typedef struct Driver {
    QTestState *qts;
    QGuestAllocator alloc;
    QPCIBus *bus;
    QVirtioPCIDevice *dev;
    QVirtQueue *vq[NUM_VQS];
    int nvqs;
} Driver;

static void driver_start(Driver *d, uint64_t features)
{
    QVirtioDevice *vdev = &d->dev->vdev;
    int i;

    qvirtio_pci_device_enable(d->dev);
    qvirtio_start_device(vdev);
    features &= qvirtio_get_features(vdev);
    /* the modern transport: the config space is where the test writes */
    features |= 1ull << VIRTIO_F_VERSION_1;
    features &= ~(1ull << VIRTIO_RING_F_INDIRECT_DESC |
                  1ull << VIRTIO_RING_F_EVENT_IDX |
                  1ull << VIRTIO_BALLOON_F_FREE_PAGE_HINT);
    qvirtio_set_features(vdev, features);
    d->nvqs = features & (1ull << VIRTIO_BALLOON_F_REPORTING) ? 4 : 3;
    for (i = 0; i < d->nvqs; i++) {
        d->vq[i] = qvirtqueue_setup(vdev, &d->alloc, i);
    }
    qvirtio_set_driver_ok(vdev);
}

static void driver_stop(Driver *d)
{
    int i;

    for (i = 0; i < d->nvqs; i++) {
        qvirtqueue_cleanup(d->dev->vdev.bus, d->vq[i], &d->alloc);
    }
    d->nvqs = 0;
}

static void queue_buffer(Driver *d, int q, const void *buf, size_t len)
{
    uint64_t addr;
    uint32_t head;

    if (q >= d->nvqs || !len) {
        return;
    }
    addr = guest_alloc(&d->alloc, len);
    qtest_memwrite(d->qts, addr, buf, len);
    head = qvirtqueue_add(d->qts, d->vq[q], addr, len, false, false);
    qvirtqueue_kick(d->qts, &d->dev->vdev, d->vq[q], head);
}

static void op_set(Input *in)
{
    struct {
        uint16_t flags;
        uint16_t hold_ms;
        uint32_t floor_pages;
        uint32_t reserve_pages;
        uint8_t pct[3];
        uint8_t enable;
        uint32_t step_pages;
        uint32_t calm_ms;
    } QEMU_PACKED v;
    BalloonAutoSettings set = { 0 };
    Error *err = NULL;

    if (!take(in, &v, sizeof(v))) {
        return;
    }
    /* each flag bit says whether the argument is present */
    set.has_enabled = v.flags & 1;
    set.enabled = v.enable & 1;
    set.has_dry_run = v.flags & 2;
    set.dry_run = v.enable & 2;
    set.has_hold_ms = v.flags & 4;
    set.hold_ms = v.hold_ms;
    set.has_floor = v.flags & 8;
    set.floor = (uint64_t)v.floor_pages << 12;
    set.has_reserve = v.flags & 16;
    set.reserve = (uint64_t)v.reserve_pages << 12;
    set.has_inflate_low = v.flags & 32;
    set.inflate_low = v.pct[0];
    set.has_inflate_medium = v.flags & 64;
    set.inflate_medium = v.pct[1];
    set.has_inflate_critical = v.flags & 128;
    set.inflate_critical = v.pct[2];
    set.has_max_step = v.flags & 256;
    set.max_step = (uint64_t)v.step_pages << 12;
    set.has_return_step = v.flags & 512;
    set.return_step = (uint64_t)v.step_pages << 10;
    set.has_calm_time_ms = v.flags & 1024;
    set.calm_time_ms = v.calm_ms;
    set.has_cooldown_ms = v.flags & 2048;
    set.cooldown_ms = v.calm_ms >> 4;
    qmp_balloon_auto_set(&set, &err);
    error_free(err);
}

/* Host-pressure decisions so far, and the floor, before a step. */
typedef struct Before {
    uint64_t host_pressure;
    int64_t floor;
} Before;

static uint64_t host_pressure_count(BalloonAutoInfo *info)
{
    BalloonAutoReasonCountList *l;

    for (l = info->decisions; l; l = l->next) {
        if (l->value->reason == BALLOON_AUTO_REASON_HOST_PRESSURE) {
            return l->value->count;
        }
    }
    g_assert_not_reached();
}

static void note_before(Before *b)
{
    BalloonAutoInfo *info = qmp_query_balloon_auto(&error_abort);

    b->host_pressure = host_pressure_count(info);
    b->floor = info->floor;
    qapi_free_BalloonAutoInfo(info);
}

/* What must hold whatever the guest and management did in a step. */
static void check_invariants(const Before *b, bool floor_may_change)
{
    BalloonAutoInfo *info = qmp_query_balloon_auto(&error_abort);
    BalloonAutoDecision *d = info->last_decision;

    g_assert_cmpint(info->max, ==, RAM_SIZE);
    g_assert_cmpint(info->actual, >=, 0);
    g_assert_cmpint(info->actual, <=, info->max);
    g_assert_cmpint(info->target, >=, 0);
    g_assert_cmpint(info->target, <=, info->max);
    g_assert_cmpint(info->baseline, <=, info->max);
    g_assert_cmpint(info->floor, <=, info->max);
    if (d) {
        g_assert_cmpint(d->new_target % 4096, ==, 0);
        g_assert_cmpint(d->new_target, <=, info->max);
    }
    /*
     * Host pressure never takes the guest below its floor.  The floor can
     * move within a step (ping-pong raises it, time lowers it again), so
     * the bound is the lower of the floors before and after the step.
     */
    if (d && d->reason == BALLOON_AUTO_REASON_HOST_PRESSURE &&
        host_pressure_count(info) > b->host_pressure && !floor_may_change) {
        g_assert_cmpint(d->new_target, >=,
                        MIN(MIN(b->floor, info->floor), d->old_target));
    }
    qapi_free_BalloonAutoInfo(info);
}

/* Carry out one operation, taking its arguments from @in. */
static void run_op(Driver *d, Input *in, uint8_t op, uint64_t features)
{
    QTestState *s = d->qts;
    uint8_t len, q, buf[MAX_BUF];
    uint16_t ticks;
    uint32_t val;
    uint64_t one = 1;

    switch (op % OP__MAX) {
    case OP_STATS:
        if (take(in, &len, 1) && take(in, buf, MIN(len, in->size))) {
            queue_buffer(d, 2, buf, MIN(len, sizeof(buf)));
        }
        break;
    case OP_PAGES:
        if (take(in, &q, 1) && take(in, &len, 1)) {
            len = MIN(len % 64 * 4, in->size);
            if (take(in, buf, len)) {
                queue_buffer(d, q % 2 ? 1 : (q & 2 ? 3 : 0), buf, len);
            }
        }
        break;
    case OP_ACTUAL:
        if (take(in, &val, sizeof(val))) {
            qpci_io_writel(d->dev->pdev, d->dev->bar,
                           d->dev->device_cfg_offset +
                           offsetof(struct virtio_balloon_config, actual),
                           val);
        }
        break;
    case OP_CLOCK:
        if (take(in, &ticks, sizeof(ticks))) {
            /* 10 ms to 11 min; qtest refuses a step of 0 */
            qtest_clock_step(s, ((int64_t)ticks + 1) * 10 * SCALE_MS);
        }
        break;
    case OP_PRESSURE:
        g_assert_cmpint(write(pressure_efd, &one, sizeof(one)), ==,
                        sizeof(one));
        break;
    case OP_BALLOON:
        if (take(in, &val, sizeof(val))) {
            Error *err = NULL;

            qmp_balloon((int64_t)val << 12, &err);
            error_free(err);
        }
        break;
    case OP_SET:
        op_set(in);
        break;
    case OP_STATUS:
        if (take(in, &q, 1)) {
            if (q == 0) {
                /* a reset, and a driver that starts again */
                driver_stop(d);
                qvirtio_reset(&d->dev->vdev);
                driver_start(d, features);
            } else {
                d->dev->vdev.bus->set_status(&d->dev->vdev, q);
            }
        }
        break;
    }
}

/* Every input starts from a fresh automatic balloon: off, then on. */
static void auto_restart(void)
{
    BalloonAutoSettings defaults = {
        .has_enabled = true, .enabled = true,
        .has_dry_run = true, .has_hold_ms = true,
        .has_floor = true, .has_reserve = true,
        .has_inflate_low = true, .inflate_low = 5,
        .has_inflate_medium = true, .inflate_medium = 10,
        .has_inflate_critical = true, .inflate_critical = 25,
        .has_max_step = true, .has_return_step = true,
        .has_calm_time_ms = true, .calm_time_ms = 10000,
        .has_cooldown_ms = true, .cooldown_ms = 1000,
    };

    qmp_balloon_auto_set(&(BalloonAutoSettings) { .has_enabled = true },
                         &error_abort);
    qmp_balloon(RAM_SIZE, &error_abort);
    qmp_balloon_auto_set(&defaults, &error_abort);
}

static void balloon_auto_fuzz(QTestState *s, const unsigned char *data,
                              size_t size)
{
    Input in = { data, size };
    Driver d = { .qts = s };
    uint64_t features = ~0ull;
    uint8_t op;

    auto_restart();
    pc_alloc_init(&d.alloc, s, ALLOC_NO_FLAGS);
    d.bus = qpci_new_pc(s, &d.alloc);
    d.dev = virtio_pci_new(d.bus, &(QPCIAddress) {
                               .devfn = QPCI_DEVFN(BALLOON_SLOT, 0) });
    g_assert_nonnull(d.dev);
    take(&in, &features, sizeof(features));
    driver_start(&d, features);

    while (in.size && take(&in, &op, 1)) {
        Before before;

        note_before(&before);
        run_op(&d, &in, op, features);
        flush_events(s);
        /* balloon-auto-set may set a floor above an earlier decision */
        check_invariants(&before, op % OP__MAX == OP_SET);
    }

    driver_stop(&d);
    qvirtio_pci_device_disable(d.dev);
    qos_object_destroy((QOSGraphObject *)d.dev);
    qpci_free_pc(d.bus);
    alloc_destroy(&d.alloc);
    fuzz_reset(s);
}

static GString *balloon_auto_cmdline(FuzzTarget *t)
{
    GString *cmd = g_string_new(TARGET_NAME);
    int passed;

    /*
     * The fuzzer's own pressure source, kept across inputs.  QEMU takes the
     * descriptor given to -add-fd over and closes it: give it a copy.
     */
    pressure_efd = eventfd(0, EFD_CLOEXEC);
    g_assert_cmpint(pressure_efd, >=, 0);
    passed = dup(pressure_efd);
    g_assert_cmpint(passed, >=, 0);
    /* in an fdset, so that turning automatic off and on opens it again */
    g_string_append_printf(cmd, " -machine pc,accel=qtest -m %d -nodefaults "
                           "-display none -add-fd fd=%d,set=1 "
                           "-device virtio-balloon-pci,id=balloon0,addr=%d.0,"
                           "automatic=on,pressure-fd=/dev/fdset/1,"
                           "pressure-fd-level=critical,deflate-on-oom=on,"
                           "free-page-reporting=on ",
                           (int)(RAM_SIZE / MiB), passed, BALLOON_SLOT);
    return cmd;
}

static void register_balloon_auto_fuzz_targets(void)
{
    fuzz_add_target(&(FuzzTarget){
        .name = "virtio-balloon-auto-fuzz",
        .description = "Fuzz the automatic virtio-balloon as a hostile "
                       "guest driver and management, with host pressure "
                       "events",
        .get_init_cmdline = balloon_auto_cmdline,
        .fuzz = balloon_auto_fuzz,
    });
}

fuzz_target_init(register_balloon_auto_fuzz_targets);
