# Sourced by scripts/package.sh and scripts/test-pkg.sh (with $target set): podman with a store
# of its own under the target dir, so that building and testing the image changes nothing in the
# machine's podman (images, containers, networks). What this machine's podman 4.3 needs: runc
# (crun rejects the hybrid cgroup hierarchy), the cgroupfs manager, no default ulimits (the
# defaults exceed the hard limits) and no default sysctls (podman would write
# net.ipv4.ping_group_range into every namespace a container joins). Containers join a
# namespace (--network ns:PATH) or none: podman makes no network of its own.
podman_dir=$target/podman
mkdir -p "$podman_dir/tmp" "$podman_dir/cni"
cat >"$podman_dir/containers.conf" <<CONF
[containers]
default_sysctls = []
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$podman_dir/events.log"
tmp_dir = "$podman_dir/tmp"
[network]
network_backend = "cni"
network_config_dir = "$podman_dir/cni"
CONF
cat >"$podman_dir/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$podman_dir/storage"
runroot = "$podman_dir/run"
CONF
export CONTAINERS_CONF=$podman_dir/containers.conf
export CONTAINERS_STORAGE_CONF=$podman_dir/storage.conf
