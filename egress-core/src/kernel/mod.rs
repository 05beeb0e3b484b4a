//! The kernel, as the objects reach it: namespaces and the threads that enter them
//! ([`netns`]), route netlink ([`netlink`]), the nftables socket ([`nft`]), `/proc/sys` beneath an
//! opened conf directory ([`procfs`]), link names as the kernel allows them ([`ifname`]), and the
//! wait of a caller for a pool thread's job ([`wait`]).

pub(crate) mod ifname;
pub(crate) mod netlink;
pub(crate) mod netns;
pub(crate) mod nft;
pub(crate) mod procfs;
pub(crate) mod wait;
