/*
 * Automatic virtio-balloon: host memory usage against a limit
 *
 * What usage near a limit means (pressure levels at fixed fractions of
 * it) and how often a source that has to poll usage looks at it: the
 * nearer the limit, the more often, so that an allocator at the fastest
 * plausible rate cannot eat the headroom between two looks, and no more
 * than once in BALLOON_HEADROOM_MAX_MS when it is far.  Pure functions,
 * shared by the pressure sources and their tests.
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VIRTIO_BALLOON_HEADROOM_H
#define HW_VIRTIO_BALLOON_HEADROOM_H

#include "hw/virtio/balloon-auto-policy.h"

/* Usage at these fractions of the limit is low, medium, critical. */
#define BALLOON_HEADROOM_LOW_PERMILLE BALLOON_POLICY_SETPOINT_PERMILLE
#define BALLOON_HEADROOM_MEDIUM_PERMILLE 900
#define BALLOON_HEADROOM_CRITICAL_PERMILLE 950

#define BALLOON_HEADROOM_FAST_RATE (1024 * 1024 * 1024ULL)   /* bytes/s */
#define BALLOON_HEADROOM_MIN_MS 100
#define BALLOON_HEADROOM_MAX_MS 10000
#define BALLOON_HEADROOM_BUSY_MS 250        /* above the first threshold */

BalloonPolicyLevel balloon_headroom_level(uint64_t usage, uint64_t limit);
/* The usage at which @level starts, for @limit. */
uint64_t balloon_headroom_threshold(BalloonPolicyLevel level, uint64_t limit);
/* How long until usage should be read again. */
int64_t balloon_headroom_interval_ms(uint64_t usage, uint64_t limit);

#endif
