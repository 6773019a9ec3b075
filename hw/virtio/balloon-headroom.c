/*
 * Automatic virtio-balloon: host memory usage against a limit
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "hw/virtio/balloon-headroom.h"

/* Usage thresholds, in per mille of the limit, and what they mean. */
static const struct {
    BalloonPolicyLevel level;
    uint32_t permille;
} headroom_thresholds[] = {
    { BALLOON_POLICY_LEVEL_LOW, BALLOON_HEADROOM_LOW_PERMILLE },
    { BALLOON_POLICY_LEVEL_MEDIUM, BALLOON_HEADROOM_MEDIUM_PERMILLE },
    { BALLOON_POLICY_LEVEL_CRITICAL, BALLOON_HEADROOM_CRITICAL_PERMILLE },
};

uint64_t balloon_headroom_threshold(BalloonPolicyLevel level, uint64_t limit)
{
    size_t i;

    for (i = 0; i < ARRAY_SIZE(headroom_thresholds); i++) {
        if (headroom_thresholds[i].level == level) {
            return limit / 1000 * headroom_thresholds[i].permille;
        }
    }
    return UINT64_MAX;
}

BalloonPolicyLevel balloon_headroom_level(uint64_t usage, uint64_t limit)
{
    BalloonPolicyLevel level = BALLOON_POLICY_LEVEL_NONE;
    size_t i;

    for (i = 0; limit && i < ARRAY_SIZE(headroom_thresholds); i++) {
        if (usage >= limit / 1000 * headroom_thresholds[i].permille) {
            level = headroom_thresholds[i].level;
        }
    }
    return level;
}

int64_t balloon_headroom_interval_ms(uint64_t usage, uint64_t limit)
{
    uint64_t low = balloon_headroom_threshold(BALLOON_POLICY_LEVEL_LOW,
                                              limit);
    uint64_t ms;

    if (usage >= low) {
        return BALLOON_HEADROOM_BUSY_MS;
    }
    /* how long the fastest plausible allocator takes to reach the first */
    ms = (low - usage) / (BALLOON_HEADROOM_FAST_RATE / 1000);
    return MIN(MAX(ms, BALLOON_HEADROOM_MIN_MS), BALLOON_HEADROOM_MAX_MS);
}
