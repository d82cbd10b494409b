#!/bin/sh
# PID 1 of a docker-in-docker node: prepare what dockerd expects of a host, then become dockerd.
set -eu
# The node runs with every capability but CAP_SYS_RESOURCE rather than --privileged (this host's
# dockerd lacks that one in its bounding set, so --privileged fails with "unable to apply caps"):
# then /sys and the cgroup mounts come read-only, and dockerd must write to both.
if grep -qE '^sysfs /sys sysfs ro[,\s]' /proc/self/mounts; then
    mount -o remount,rw /sys
fi
for m in $(awk '($3 == "cgroup" || $3 == "cgroup2") && $4 ~ /^ro/ { print $2 }' /proc/self/mounts); do
    # Per-mount flag only (bind): the cgroup superblock is the host's and stays as it is.
    mount -o remount,bind,rw "$m"
done
# AppArmor/LSM checks read securityfs; a privileged container may not have it mounted.
if [ -d /sys/kernel/security ] && ! mountpoint -q /sys/kernel/security; then
    mount -t securityfs none /sys/kernel/security 2>/dev/null || true
fi
# cgroup v2 (unified): move ourselves out of the root cgroup so that controllers can be enabled
# for the containers this dockerd starts (the same step as docker's own dind script).
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    mkdir -p /sys/fs/cgroup/init
    xargs -rn1 < /sys/fs/cgroup/cgroup.procs > /sys/fs/cgroup/init/cgroup.procs 2>/dev/null || true
    sed -e 's/ / +/g' -e 's/^/+/' < /sys/fs/cgroup/cgroup.controllers \
        > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
fi
exec dockerd --host=unix:///var/run/docker.sock "$@"
