//! nftables over netlink (placeholder: being written).
