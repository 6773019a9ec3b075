/*
 * Automatic virtio-balloon: cgroup files and layout
 *
 * What the pressure sources read from cgroup v1 and v2 hierarchies: where
 * they are mounted, the cgroup a process is in, the VM-level cgroup of a
 * libvirt layout, the memory limit in force along a path, the
 * protections, memory.events.  Plain file reads, no main loop: the
 * functions take the hierarchy's mount point and a directory, or the
 * directory standing for /proc (NULL: /proc), so tests can point them at
 * a fake tree.
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VIRTIO_BALLOON_CGROUP_H
#define HW_VIRTIO_BALLOON_CGROUP_H

/* The counters of a cgroup v2 memory.events file (absent ones are 0). */
typedef struct BalloonCgroupEvents {
    uint64_t low;
    uint64_t high;
    uint64_t max;
    uint64_t oom;
    uint64_t oom_kill;
} BalloonCgroupEvents;

/*
 * The path of the cgroup, in /proc/PID/cgroup's @text, of the v1
 * hierarchy holding @v1_controller, or of the v2 hierarchy if it is NULL.
 */
char *balloon_cgroup_parse_own(const char *text, const char *v1_controller);

/*
 * @dir, or the root of the threaded subtree it is in: libvirt puts QEMU's
 * threads in threaded children (emulator, vcpuN) of the VM's cgroup,
 * which have no memory files and whose PSI misses the other threads.
 */
char *balloon_cgroup_domain(const char *dir);

/*
 * The value of a memory file in @dir: false if absent, unreadable, "max"
 * or v1's "unlimited" (a page-rounded LLONG_MAX), or 0.
 */
bool balloon_cgroup_read_value(const char *dir, const char *file,
                               uint64_t *val);

/*
 * The memory limit in force on @dir: the lowest memory.max or memory.high
 * from @dir up to @mnt (the root has neither).  *origin names the file.
 */
bool balloon_cgroup_v2_limit(const char *mnt, const char *dir,
                             uint64_t *limit, char **origin);

/*
 * The memory @dir is promised: the larger of its memory.min and
 * memory.low, no more than what a protected ancestor has, or 0.
 */
uint64_t balloon_cgroup_v2_protection(const char *mnt, const char *dir,
                                      char **origin);

/* Parse a memory.events file; false if it is not one. */
bool balloon_cgroup_parse_events(const char *text, BalloonCgroupEvents *ev);

/*
 * Where a cgroup hierarchy is mounted (@proc/self/mounts): v2
 * (@v1_controller NULL) or the v1 hierarchy holding @v1_controller.
 */
char *balloon_cgroup_mount(const char *proc, const char *v1_controller,
                           Error **errp);

/* This process's cgroup path (@proc/self/cgroup), see _parse_own(). */
char *balloon_cgroup_own(const char *proc, const char *v1_controller);

/*
 * The directory of the cgroup to watch: @given as a directory, or as a
 * path inside the hierarchy, or this process's own cgroup (its VM-level
 * cgroup if it sits in a threaded child) when @given is NULL.  Only a
 * directory inside the hierarchy: "..", or a link leading elsewhere, where
 * a FIFO named like a cgroup file would block for ever, is an error.
 * Sets *@mnt_out (if not NULL) to the hierarchy's mount point and
 * *@is_root when the cgroup is its root.
 */
char *balloon_cgroup_dir(const char *proc, const char *v1_controller,
                         const char *given, char **mnt_out, bool *is_root,
                         Error **errp);

/* Whether the v2 hierarchy has the memory controller (not a v1 one). */
bool balloon_cgroup_v2_has_memory(const char *proc);

/*
 * The memory protection this process's cgroups declare (v2 memory.min or
 * memory.low, v1 memory.soft_limit_in_bytes as libvirt's <memtune> sets
 * it), or 0.  *@origin names the file it came from.
 */
uint64_t balloon_cgroup_protection(const char *proc, char **origin);

#endif
