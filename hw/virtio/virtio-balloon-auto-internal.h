/*
 * Automatic virtio-balloon: what the device glue offers its monitor face
 *
 * virtio-balloon-auto.c keeps the device (properties, realize, timers,
 * statistics, migration); virtio-balloon-auto-qmp.c shows and steers it
 * through QMP and HMP with these.
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VIRTIO_VIRTIO_BALLOON_AUTO_INTERNAL_H
#define HW_VIRTIO_VIRTIO_BALLOON_AUTO_INTERNAL_H

#include "qapi/qapi-types-balloon-auto.h"
#include "hw/virtio/virtio-balloon.h"

/* A hold set by balloon-auto-set lasts at most this long. */
#define BALLOON_AUTO_MAX_HOLD_MS (24 * 3600 * 1000)

/* Policy time: QEMU_CLOCK_VIRTUAL, nanoseconds. */
int64_t virtio_balloon_auto_now(void);

/* What the balloon works on (RAM plus DIMMs), as upstream counts it. */
uint64_t virtio_balloon_auto_ram_size(void);
/* The guest size the driver has reached, and the one asked of it. */
uint64_t virtio_balloon_auto_actual(VirtIOBalloon *s);
uint64_t virtio_balloon_auto_target(VirtIOBalloon *s);

/* What it does now, and what blocks it (for paused and inhibited). */
BalloonAutoStatus virtio_balloon_auto_status(VirtIOBalloon *s,
                                             BalloonAutoBlocker *blocker);

/*
 * Check @t and turn it into policy parameters for a VM of @ram bytes,
 * the floor defaulting to what @bp's cgroups promise (if @bp).  Errors
 * name the property, or with @as_arguments the balloon-auto-set argument.
 */
bool virtio_balloon_auto_tunables_apply(const BalloonAutoTunables *t,
                                        bool as_arguments, uint64_t ram,
                                        const BalloonPressure *bp,
                                        BalloonPolicyParams *p,
                                        char **floor_origin, Error **errp);

/* A setpoint for the host's own memory, in percent, or an error. */
bool virtio_balloon_auto_host_setpoint_check(uint8_t pct, Error **errp);

/* Turn automatic ballooning on (with the device's tunables) or off. */
bool virtio_balloon_auto_start(VirtIOBalloon *s, Error **errp);
void virtio_balloon_auto_stop(VirtIOBalloon *s);

/* Look at everything again now, and decide if something changed. */
void virtio_balloon_auto_evaluate(VirtIOBalloon *s);

/* Ask the driver for a guest of @target bytes. */
void virtio_balloon_auto_set_target(VirtIOBalloon *s, uint64_t target);

#endif
