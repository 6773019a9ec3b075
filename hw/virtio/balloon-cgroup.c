/*
 * Automatic virtio-balloon: cgroup files and layout
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "hw/virtio/balloon-cgroup.h"

char *balloon_cgroup_parse_own(const char *text, const char *v1_controller)
{
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    int i;

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

char *balloon_cgroup_domain(const char *dir)
{
    char *domain = g_strdup(dir);

    for (;;) {
        g_autofree char *file = g_build_filename(domain, "cgroup.type", NULL);
        g_autofree char *type = NULL;
        char *parent;

        if (!g_file_get_contents(file, &type, NULL, NULL) ||
            strcmp(g_strstrip(type), "threaded")) {
            return domain;
        }
        parent = g_path_get_dirname(domain);
        g_free(domain);
        domain = parent;
    }
}

bool balloon_cgroup_read_value(const char *dir, const char *file,
                               uint64_t *val)
{
    g_autofree char *path = g_build_filename(dir, file, NULL);
    g_autofree char *text = NULL;

    if (!g_file_get_contents(path, &text, NULL, NULL) ||
        qemu_strtou64(g_strstrip(text), NULL, 10, val) < 0) {
        return false;
    }
    return *val && *val < (1ULL << 62);
}

/*
 * Call @fn for @dir and each ancestor below @mnt, nearest first, until it
 * returns false.
 */
static void for_each_level(const char *mnt, const char *dir,
                           bool (*fn)(const char *level, void *opaque),
                           void *opaque)
{
    g_autofree char *level = g_strdup(dir);

    while (g_str_has_prefix(level, mnt) && strlen(level) > strlen(mnt) &&
           level[strlen(mnt)] == '/') {
        char *parent;

        if (!fn(level, opaque)) {
            return;
        }
        parent = g_path_get_dirname(level);
        g_free(level);
        level = parent;
    }
}

typedef struct Lowest {
    uint64_t value;
    char *origin;
    const char *const *files;
} Lowest;

static bool lowest_limit(const char *level, void *opaque)
{
    Lowest *l = opaque;
    int i;

    for (i = 0; l->files[i]; i++) {
        uint64_t v;

        if (balloon_cgroup_read_value(level, l->files[i], &v) &&
            (!l->value || v < l->value)) {
            l->value = v;
            g_free(l->origin);
            l->origin = g_build_filename(level, l->files[i], NULL);
        }
    }
    return true;
}

bool balloon_cgroup_v2_limit(const char *mnt, const char *dir,
                             uint64_t *limit, char **origin)
{
    static const char *const files[] = { "memory.max", "memory.high", NULL };
    Lowest l = { .files = files };

    for_each_level(mnt, dir, lowest_limit, &l);
    if (!l.value) {
        return false;
    }
    *limit = l.value;
    *origin = l.origin;
    return true;
}

uint64_t balloon_cgroup_v2_protection(const char *mnt, const char *dir,
                                      char **origin)
{
    static const char *const files[] = { "memory.min", "memory.low", NULL };
    g_autofree char *parent = g_path_get_dirname(dir);
    uint64_t own = 0;
    Lowest ancestors = { .files = files };
    int i;

    *origin = NULL;
    for (i = 0; files[i]; i++) {
        uint64_t v;

        if (balloon_cgroup_read_value(dir, files[i], &v) && v > own) {
            own = v;
            g_free(*origin);
            *origin = g_build_filename(dir, files[i], NULL);
        }
    }
    if (!own) {
        return 0;
    }
    /* A protected ancestor shares what it has among its children. */
    for_each_level(mnt, parent, lowest_limit, &ancestors);
    if (ancestors.value && ancestors.value < own) {
        own = ancestors.value;
        g_free(*origin);
        *origin = g_steal_pointer(&ancestors.origin);
    }
    g_free(ancestors.origin);
    return own;
}

bool balloon_cgroup_parse_events(const char *text, BalloonCgroupEvents *ev)
{
    static const struct {
        const char *name;
        size_t offset;
    } keys[] = {
        { "low", offsetof(BalloonCgroupEvents, low) },
        { "high", offsetof(BalloonCgroupEvents, high) },
        { "max", offsetof(BalloonCgroupEvents, max) },
        { "oom", offsetof(BalloonCgroupEvents, oom) },
        { "oom_kill", offsetof(BalloonCgroupEvents, oom_kill) },
    };
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    bool seen = false;
    int i;

    memset(ev, 0, sizeof(*ev));
    for (i = 0; lines[i]; i++) {
        g_auto(GStrv) f = g_strsplit(lines[i], " ", 2);
        uint64_t v;
        size_t k;

        if (g_strv_length(f) != 2 || qemu_strtou64(f[1], NULL, 10, &v) < 0) {
            continue;
        }
        for (k = 0; k < ARRAY_SIZE(keys); k++) {
            if (!strcmp(f[0], keys[k].name)) {
                *(uint64_t *)((char *)ev + keys[k].offset) = v;
                seen = true;
            }
        }
    }
    return seen;
}
