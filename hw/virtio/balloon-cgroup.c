/*
 * Automatic virtio-balloon: cgroup files and layout
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <mntent.h>
#include "qapi/error.h"
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
static void for_each_ancestor(const char *mnt, const char *dir,
                              bool (*fn)(const char *cgroup, void *opaque),
                              void *opaque)
{
    g_autofree char *cgroup = g_strdup(dir);

    while (g_str_has_prefix(cgroup, mnt) && strlen(cgroup) > strlen(mnt) &&
           cgroup[strlen(mnt)] == '/') {
        char *parent;

        if (!fn(cgroup, opaque)) {
            return;
        }
        parent = g_path_get_dirname(cgroup);
        g_free(cgroup);
        cgroup = parent;
    }
}

typedef struct Lowest {
    uint64_t value;
    char *origin;
    const char *const *files;
} Lowest;

static bool lowest_limit(const char *cgroup, void *opaque)
{
    Lowest *l = opaque;
    int i;

    for (i = 0; l->files[i]; i++) {
        uint64_t v;

        if (balloon_cgroup_read_value(cgroup, l->files[i], &v) &&
            (!l->value || v < l->value)) {
            l->value = v;
            g_free(l->origin);
            l->origin = g_build_filename(cgroup, l->files[i], NULL);
        }
    }
    return true;
}

bool balloon_cgroup_v2_limit(const char *mnt, const char *dir,
                             uint64_t *limit, char **origin)
{
    static const char *const files[] = { "memory.max", "memory.high", NULL };
    Lowest l = { .files = files };

    for_each_ancestor(mnt, dir, lowest_limit, &l);
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
    for_each_ancestor(mnt, parent, lowest_limit, &ancestors);
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

char *balloon_cgroup_mount(const char *proc, const char *v1_controller,
                           Error **errp)
{
    g_autofree char *mounts = g_build_filename(proc ?: "/proc", "self",
                                               "mounts", NULL);
    FILE *f = setmntent(mounts, "r");
    struct mntent *m;
    char *dir = NULL;

    if (!f) {
        error_setg_errno(errp, errno, "cannot read %s", mounts);
        return NULL;
    }
    while ((m = getmntent(f))) {
        if (v1_controller ? !strcmp(m->mnt_type, "cgroup") &&
                            hasmntopt(m, v1_controller)
                          : !strcmp(m->mnt_type, "cgroup2")) {
            dir = g_strdup(m->mnt_dir);
            break;
        }
    }
    endmntent(f);
    if (!dir) {
        error_setg(errp, "no cgroup %s hierarchy is mounted",
                   v1_controller ? "v1 memory" : "v2");
    }
    return dir;
}

char *balloon_cgroup_own(const char *proc, const char *v1_controller)
{
    g_autofree char *path = g_build_filename(proc ?: "/proc", "self",
                                             "cgroup", NULL);
    g_autofree char *content = NULL;

    if (!g_file_get_contents(path, &content, NULL, NULL)) {
        return NULL;
    }
    return balloon_cgroup_parse_own(content, v1_controller);
}

char *balloon_cgroup_dir(const char *proc, const char *v1_controller,
                         const char *given, char **mnt_out, bool *is_root,
                         Error **errp)
{
    g_autofree char *mounted = balloon_cgroup_mount(proc, v1_controller,
                                                    errp);
    g_autofree char *mnt = NULL;
    g_autofree char *rel = NULL;
    g_autofree char *path = NULL;
    g_autofree char *real = NULL;

    if (!mounted) {
        return NULL;
    }
    mnt = realpath(mounted, NULL);
    if (!mnt) {
        error_setg_errno(errp, errno, "cannot resolve %s", mounted);
        return NULL;
    }
    if (given && g_str_has_prefix(given, mounted) &&
        g_file_test(given, G_FILE_TEST_IS_DIR)) {
        path = g_strdup(given);
    } else {
        rel = given ? g_strdup(given) : balloon_cgroup_own(proc,
                                                           v1_controller);
        if (!rel) {
            error_setg(errp, "cannot find QEMU's own %s cgroup in "
                       "/proc/self/cgroup",
                       v1_controller ? "v1 memory" : "v2");
            return NULL;
        }
        path = g_build_filename(mnt, rel, NULL);
    }
    /*
     * Only cgroup directories: ".." or a link could lead elsewhere, where
     * a FIFO named like a cgroup file would block QEMU for ever.
     */
    real = realpath(path, NULL);
    if (!real || !g_file_test(real, G_FILE_TEST_IS_DIR) ||
        !(g_str_equal(real, mnt) ||
          (g_str_has_prefix(real, mnt) && real[strlen(mnt)] == '/'))) {
        error_setg(errp, "%s is not a cgroup directory under %s", path, mnt);
        return NULL;
    }
    *is_root = g_str_equal(real, mnt);
    if (mnt_out) {
        *mnt_out = g_strdup(mnt);
    }
    return given ? g_steal_pointer(&real) : balloon_cgroup_domain(real);
}

bool balloon_cgroup_v2_has_memory(const char *proc)
{
    g_autofree char *mnt = balloon_cgroup_mount(proc, NULL, NULL);
    g_autofree char *path = NULL;
    g_autofree char *text = NULL;
    g_auto(GStrv) ctrls = NULL;

    if (!mnt) {
        return false;
    }
    path = g_build_filename(mnt, "cgroup.controllers", NULL);
    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        return false;
    }
    ctrls = g_strsplit_set(g_strstrip(text), " ", -1);
    return g_strv_contains((const char * const *)ctrls, "memory");
}

uint64_t balloon_cgroup_protection(const char *proc, char **origin)
{
    g_autofree char *mnt = NULL;
    g_autofree char *v2 = NULL;
    g_autofree char *v1 = NULL;
    g_autofree char *v2_origin = NULL;
    uint64_t best = 0, v;
    bool is_root;

    *origin = NULL;
    v2 = balloon_cgroup_dir(proc, NULL, NULL, &mnt, &is_root, NULL);
    if (v2 && !is_root) {
        best = balloon_cgroup_v2_protection(mnt, v2, &v2_origin);
        *origin = g_steal_pointer(&v2_origin);
    }
    /* v1: libvirt's <memtune><soft_limit> */
    v1 = balloon_cgroup_dir(proc, "memory", NULL, NULL, &is_root, NULL);
    if (v1 && !is_root &&
        balloon_cgroup_read_value(v1, "memory.soft_limit_in_bytes", &v) &&
        v > best) {
        best = v;
        g_free(*origin);
        *origin = g_build_filename(v1, "memory.soft_limit_in_bytes", NULL);
    }
    return best;
}
