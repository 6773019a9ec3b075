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
    /* Properties (virtio-balloon.c's) */
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
    QEMUTimer *stats_timer;     /* QEMU_CLOCK_VIRTUAL; asks below 1 s */
    bool stats_asked;           /* the device asked, no answer yet */
    uint64_t host_reading;      /* the source's last reading we noted */
    bool driver_was_ready;      /* DRIVER_OK seen by set_status */
    bool fd_taken;              /* pressure-fd is among the source's */
    VMChangeStateEntry *vm_state; /* resume: host growth starts afresh */
    bool enabled_at_start;      /* automatic=on at realize */
    bool state_migrated;        /* the subsection arrived, not yet applied */
    BalloonAutoWire wire;
} VirtIOBalloonAuto;

extern const VMStateDescription vmstate_virtio_balloon_auto;

/* Hooks called by virtio-balloon.c */
bool virtio_balloon_auto_realize(VirtIOBalloon *s, Error **errp);
void virtio_balloon_auto_unrealize(VirtIOBalloon *s);
void virtio_balloon_auto_reset(VirtIOBalloon *s);
void virtio_balloon_auto_stats_received(VirtIOBalloon *s);
void virtio_balloon_auto_stats_requested(VirtIOBalloon *s);
void virtio_balloon_auto_actual_changed(VirtIOBalloon *s);
void virtio_balloon_auto_set_status(VirtIOBalloon *s, uint8_t status);
/* A manual balloon request; true if the automatic balloon took it. */
bool virtio_balloon_auto_manual_target(VirtIOBalloon *s, uint64_t target);
/* From the device's post_load, after the subsection (if sent) was loaded */
int virtio_balloon_auto_post_load_device(VirtIOBalloon *s);

#endif
