//! Questions a front end asks about a namespace before it can build a spec (which link is the
//! uplink, whether a link is there), answered over netlink. Reads only: nothing is changed.

use crate::{
    apply::require_net_admin,
    error::Result,
    netns::NsHandle,
    ops::{link, route},
    spec::Netns,
};

/// The name of the link the main table's default route goes out of in `netns` (IPv6 when
/// `ipv6`), or `None` when that table has no default route with an outgoing link. Equivalent
/// to `ip [-6] route show default table main`.
///
/// ```no_run
/// use egress_core::{default_route_link, Netns};
///
/// # async fn uplink() -> egress_core::Result<()> {
/// if let Some(link) = default_route_link(&Netns::Current, false).await? {
///     println!("the default route goes out of {link}");
/// }
/// # Ok(())
/// # }
/// ```
pub async fn default_route_link(netns: &Netns, ipv6: bool) -> Result<Option<String>> {
    require_net_admin("read the default route")?;
    NsHandle::open(netns, "netns")?
        .within(move |ns| async move {
            let h = ns.route_connection()?;
            let routes = route::list(&h, ipv6).await?;
            let links = link::list(&h).await?;
            Ok(routes
                .iter()
                .filter(|r| r.table == route::main_table() && r.is_default())
                .find_map(|r| r.oif)
                .and_then(|oif| links.iter().find(|l| l.index == oif))
                .map(|l| l.name.clone()))
        })
        .await
}

/// Whether `netns` has a link called `name`. Equivalent to `ip link show dev NAME`.
///
/// ```no_run
/// use egress_core::{link_exists, Netns};
///
/// # async fn parent() -> egress_core::Result<()> {
/// if !link_exists(&Netns::Current, "eth1").await? {
///     eprintln!("no eth1 here to put a macvlan on");
/// }
/// # Ok(())
/// # }
/// ```
pub async fn link_exists(netns: &Netns, name: &str) -> Result<bool> {
    require_net_admin("look up a link")?;
    let name = name.to_string();
    NsHandle::open(netns, "netns")?
        .within(move |ns| async move {
            let h = ns.route_connection()?;
            Ok(link::get(&h, &name).await?.is_some())
        })
        .await
}
