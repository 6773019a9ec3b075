/*
 * Automatic virtio-balloon: device glue
 *
 * With automatic=on the virtio-balloon device inflates the balloon when the
 * host is short of memory and deflates it when the guest needs memory; see
 * docs/system/devices/virtio-balloon-auto.rst.
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VIRTIO_BALLOON_AUTO_H
#define HW_VIRTIO_BALLOON_AUTO_H

#include "qemu/timer.h"
#include "system/runstate.h"
#include "qemu/units.h"
#include "hw/virtio/balloon-auto-policy.h"
#include "hw/virtio/balloon-pressure.h"

typedef struct VirtIOBalloon VirtIOBalloon;

/*
 * What the properties and balloon-auto-set tune, and the migration
 * stream carries.  Sizes of 0 mean the default, scaled to the VM.
 */
typedef struct BalloonAutoTunables {
    uint64_t floor;             /* 0: from the cgroup or 25% of RAM */
    uint64_t reserve;           /* 0: max(64 MiB, RAM / 16) */
    uint8_t inflate_pct[BALLOON_POLICY_LEVEL__MAX];
    uint64_t max_step;
    uint64_t return_step;
    uint32_t calm_time_ms;
    uint32_t cooldown_ms;
} BalloonAutoTunables;

/* What the migration stream carries; validated before it is used. */
typedef struct BalloonAutoWire {
    BalloonPolicyState state;
    BalloonPolicyGuestStats stats;
    bool enabled;
    bool enabled_at_start;
    bool dry_run;
    int64_t hold_until;
    uint32_t last_reason;
    uint32_t last_level;
    uint64_t last_old_target;
    uint64_t last_new_target;
    uint64_t last_actual;
    int64_t last_time;
    bool last_applied;
    BalloonAutoTunables tunables;
} BalloonAutoWire;

typedef struct VirtIOBalloonAuto {
    /* Properties (see DEFINE_VIRTIO_BALLOON_AUTO_PROPERTIES) */
    bool enabled;
    bool dry_run;
    char *source;
    char *cgroup;
    char *fd;
    char *fd_level;
    uint32_t psi_window_ms;
    uint8_t host_setpoint;      /* percent of MemTotal */
    BalloonAutoTunables tunables;

    /* Run time */
    bool realized;
    BalloonPolicyParams params;
    BalloonPolicyState state;
    BalloonPolicyGuestStats stats;
    BalloonPressure *pressure;
    QEMUTimer *timer;           /* QEMU_CLOCK_VIRTUAL, nanoseconds */
    int64_t hold_until;         /* QEMU_CLOCK_VIRTUAL ns; manual hold */
    char *floor_origin;
    BalloonPolicyDecision last;
    BalloonPolicyLevel last_level;
    uint64_t last_actual;       /* driver's size when it was decided */
    int64_t last_time;
    bool last_applied;
    bool inhibit_warned;
    bool polls_stats;           /* stats polling was turned on for us */
    int64_t polls_every;        /* the interval we set, seconds */
    uint64_t host_reading;      /* the source's last reading we noted */
    bool driver_was_ready;      /* DRIVER_OK seen by set_status */
    bool fd_taken;              /* pressure-fd is among the source's */
    VMChangeStateEntry *vm_state; /* resume: host growth starts afresh */
    bool enabled_at_start;      /* automatic=on at realize */
    bool state_migrated;        /* the subsection arrived, not yet applied */
    BalloonAutoWire wire;
} VirtIOBalloonAuto;

#define DEFINE_VIRTIO_BALLOON_AUTO_PROPERTIES(_s, _f)                        \
    DEFINE_PROP_BOOL("automatic", _s, _f.enabled, false),                   \
    DEFINE_PROP_BOOL("auto-dry-run", _s, _f.dry_run, false),                \
    DEFINE_PROP_STRING("pressure-source", _s, _f.source),                   \
    DEFINE_PROP_STRING("pressure-cgroup", _s, _f.cgroup),                   \
    DEFINE_PROP_STRING("pressure-fd", _s, _f.fd),                           \
    DEFINE_PROP_STRING("pressure-fd-level", _s, _f.fd_level),               \
    DEFINE_PROP_UINT32("psi-window-ms", _s, _f.psi_window_ms, 1000),        \
    DEFINE_PROP_UINT8("host-setpoint", _s, _f.host_setpoint, 80),           \
    DEFINE_PROP_SIZE("auto-floor", _s, _f.tunables.floor, 0),               \
    DEFINE_PROP_SIZE("auto-reserve", _s, _f.tunables.reserve, 0),           \
    DEFINE_PROP_UINT8("inflate-low", _s,                                    \
                      _f.tunables.inflate_pct[BALLOON_POLICY_LEVEL_LOW],    \
                      BALLOON_POLICY_INFLATE_LOW_PCT),                      \
    DEFINE_PROP_UINT8("inflate-medium", _s,                                 \
                      _f.tunables.inflate_pct[BALLOON_POLICY_LEVEL_MEDIUM], \
                      BALLOON_POLICY_INFLATE_MEDIUM_PCT),                   \
    DEFINE_PROP_UINT8("inflate-critical", _s,                               \
                      _f.tunables.inflate_pct[BALLOON_POLICY_LEVEL_CRITICAL], \
                      BALLOON_POLICY_INFLATE_CRITICAL_PCT),                 \
    DEFINE_PROP_SIZE("auto-max-step", _s, _f.tunables.max_step, 0),         \
    DEFINE_PROP_SIZE("auto-return-step", _s, _f.tunables.return_step, 0),   \
    DEFINE_PROP_UINT32("auto-calm-time-ms", _s, _f.tunables.calm_time_ms,   \
                       10000),                                              \
    DEFINE_PROP_UINT32("auto-cooldown-ms", _s, _f.tunables.cooldown_ms, 1000)

extern const VMStateDescription vmstate_virtio_balloon_auto;

/* Hooks called by virtio-balloon.c */
bool virtio_balloon_auto_realize(VirtIOBalloon *s, Error **errp);
void virtio_balloon_auto_unrealize(VirtIOBalloon *s);
void virtio_balloon_auto_reset(VirtIOBalloon *s);
void virtio_balloon_auto_stats_received(VirtIOBalloon *s);
void virtio_balloon_auto_actual_changed(VirtIOBalloon *s);
void virtio_balloon_auto_set_status(VirtIOBalloon *s, uint8_t status);
/* A manual balloon request; true if the automatic balloon took it. */
bool virtio_balloon_auto_manual_target(VirtIOBalloon *s, uint64_t target);
/* From the device's post_load, after the subsection (if sent) was loaded */
int virtio_balloon_auto_post_load_device(VirtIOBalloon *s);

#endif
