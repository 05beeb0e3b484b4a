//! The trust boundary of what egress reads back from a namespace: the crash record, its notes,
//! the table comment and the markers are input that anyone with `CAP_NET_ADMIN` in the router's
//! namespace can forge. Whatever they plant, a teardown, an ensure, a watch or a CNI DEL (all
//! running as the node's root) writes nothing outside the namespace's
//! `/proc/sys/net/ipv{4,6}/conf/` entries, and touches no object the router cannot prove its
//! own; a teardown of a name that has no record changes nothing.
//!
//! As root, in throwaway namespaces (`egt-<pid>-…`); a test that cannot build them fails.

use std::{
    net::Ipv6Addr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use egress_core::{blocking, link_group_marker, ErrorKind, Netns as CoreNetns, Role, RouterSpec};
use egress_lab::{cni_binary, router_binary, seed, watched, Lab, Netns, Rng, Snapshot, Snapshots};

/// The journal routing table, as `ip` names it.
const JOURNAL: &str = "1701278323";

/// `egress-router teardown --netns ROUTER --name NAME`, run from the node's namespace as an
/// operator runs it; its exit code and stderr.
fn teardown_binary(lab: &Lab, name: &str) -> (Option<i32>, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", lab.node.name()])
        .arg(router_binary())
        .args(["teardown", "--netns"])
        .arg(lab.router.path())
        .args(["--name", name])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A CNI DEL of attachment (`container_id`, `net1`) of the router's namespace, as the runtime
/// sends it from the node's namespace; its exit code and stderr.
fn cni_del(lab: &Lab, container_id: &str) -> (Option<i32>, String) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", lab.node.name()])
        .arg(cni_binary())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", "DEL")
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", lab.router.path())
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The address of note `seq` (from 1) of `text` tagged `tag` with apply id `id`, as egress
/// writes its notes: the tag, the id, then 10 bytes of the text.
fn note_address(tag: [u8; 2], id: u32, chunk: &[u8]) -> Ipv6Addr {
    let mut b = [0u8; 16];
    b[..2].copy_from_slice(&tag);
    b[2..6].copy_from_slice(&id.to_be_bytes());
    b[6..6 + chunk.len()].copy_from_slice(chunk);
    Ipv6Addr::from(b)
}

/// Plants `text` as notes tagged `tag` (`6567:` a crash record, `6569:` identity notes) with
/// apply id `id` in the journal table of `ns`, as `ip` can: blackhole routes with protocol 158.
fn plant_notes(ns: &Netns, tag: [u8; 2], id: u32, text: &[u8]) {
    let batch: String = text
        .chunks(10)
        .enumerate()
        .map(|(i, chunk)| {
            format!(
                "route add blackhole {}/128 table {JOURNAL} proto 158 metric {}\n",
                note_address(tag, id, chunk),
                i + 1
            )
        })
        .collect();
    ip_batch(ns, &batch);
}

/// `ip -6 -batch` of `lines` in `ns`.
fn ip_batch(ns: &Netns, lines: &str) {
    let file = std::env::temp_dir().join(format!("egt-{}-{}.batch", std::process::id(), ns.name()));
    std::fs::write(&file, lines).unwrap();
    let r = ns.try_exec(&["ip", "-6", "-batch", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    r.unwrap_or_else(|e| panic!("{e}\n{lines}"));
}

/// A directory of this test process under the system's temporary directory, empty, removed on
/// drop: where forged records point their paths.
struct Canary(PathBuf);

impl Canary {
    fn new(what: &str) -> Canary {
        let dir = std::env::temp_dir().join(format!("egt-{}-{what}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        Canary(dir)
    }

    /// Its path as `..` components from `/proc/sys/net/ipv4/conf/`: what a forged restore
    /// entry names.
    fn beneath_conf(&self) -> String {
        format!("../../../../..{}", self.0.display())
    }

    #[track_caller]
    fn assert_empty(&self, after: &str) {
        let entries: Vec<_> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            entries.is_empty(),
            "{after}: files created on the node: {entries:?}"
        );
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Finding 1 of issue 24: notes spelling a restore entry whose link part climbs out of
/// `/proc/sys/net/ipv4/conf/` made `egress-router teardown` and a CNI DEL (the node's root)
/// create `forwarding` in any directory of the node. The forged record is not a record: both
/// change nothing, write nothing.
#[test]
fn a_forged_crash_record_writes_no_file_on_the_node() {
    let lab = Lab::new();
    let canary = Canary::new("canary");
    let cni_container = "f0f0f0f0f0f0forged";
    let cni_router = egress_cni::router_name(cni_container, "net1");
    for (name, id) in [
        ("forged", 0x0000_abcd_u32),
        (cni_router.as_str(), 0x0000_abce),
    ] {
        let text = format!(
            "egress/2 r={name} id={id:08x} link=eth0 c=0 up=1 4{}.f=owned",
            canary.beneath_conf()
        );
        plant_notes(&lab.router, [0x65, 0x67], id, text.as_bytes());
    }
    let planted = Snapshot::take(&lab.router);
    let (code, stderr) = teardown_binary(&lab, "forged");
    assert_eq!(code, Some(0), "{stderr}");
    canary.assert_empty("egress-router teardown of a forged record");
    let (code, stderr) = cni_del(&lab, cni_container);
    assert_eq!(code, Some(0), "{stderr}");
    canary.assert_empty("CNI DEL of a forged record");
    let after = Snapshot::take(&lab.router);
    assert!(
        planted == after,
        "a forged record made the teardown change the namespace: {}",
        planted.diff(&after)
    );
}

/// Finding 2 of issue 24: `r66929` and `egress-router` share a link group marker (a 16-bit
/// hash); a teardown of `r66929`, which has no record, deleted `egress-router`'s macvlan,
/// address and default route, and a standby's role markers. Now it changes nothing.
#[test]
fn a_teardown_of_a_name_without_a_record_touches_no_other_router() {
    assert_eq!(
        link_group_marker("r66929"),
        link_group_marker("egress-router"),
        "the two names no longer collide: choose another pair"
    );
    let lab = Lab::new();
    for role in [Role::Active, Role::Standby] {
        let spec = lab.router_spec("egress-router").build().unwrap();
        let before = Snapshots::take(&lab);
        blocking::apply_as(&spec, role).unwrap();
        let applied = Snapshots::take(&lab);
        let (code, stderr) = teardown_binary(&lab, "r66929");
        assert_eq!(code, Some(0), "{role}: {stderr}");
        applied.assert_restored(&format!("{role}: teardown of r66929"));
        // Nor does an ensure of r66929 (its macvlan named as egress-router's) take
        // egress-router's link for its own: one router per namespace.
        let other = lab.router_spec("r66929").build().unwrap();
        let e = blocking::ensure(&other).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{role}: {e}");
        assert!(e.to_string().contains("egress-router"), "{role}: {e}");
        applied.assert_restored(&format!("{role}: ensure of r66929"));
        assert!(blocking::check(&spec).unwrap().is_empty(), "{role}");
        let state = blocking::inspect(spec.netns(), spec.name())
            .unwrap()
            .unwrap();
        assert_eq!(state.role, role);
        blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
        before.assert_restored(&format!("{role}: teardown of egress-router"));
    }
}

/// CLOCK_BOOTTIME in seconds, as a teardown marker carries it.
fn boottime() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes one timespec into `ts`.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) },
        0
    );
    ts.tv_sec as u32
}

/// The apply id of router `spec` (its crash record, as inspect shows it).
fn apply_id(spec: &RouterSpec) -> u32 {
    let state = blocking::inspect(spec.netns(), spec.name())
        .unwrap()
        .unwrap();
    let journal = state.journal.unwrap();
    let id = journal
        .split(' ')
        .find_map(|t| t.strip_prefix("id="))
        .unwrap();
    u32::from_str_radix(id, 16).unwrap()
}

/// `ip -6 route add blackhole ADDR/128 table 1701278323 proto 158 metric 1` in the router
/// namespace: a marker as egress writes it.
fn plant_marker(lab: &Lab, addr: Ipv6Addr) {
    lab.router.ip(&[
        "-6",
        "route",
        "add",
        "blackhole",
        &format!("{addr}/128"),
        "table",
        JOURNAL,
        "proto",
        "158",
        "metric",
        "1",
    ]);
}

/// Waits until the watch reports a repair, at most `within`; how long it took.
fn repaired_within(
    events: &mpsc::Receiver<egress_core::WatchEvent>,
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while let Some(left) = within.checked_sub(started.elapsed()) {
        match events.recv_timeout(left) {
            Ok(egress_core::WatchEvent::Repaired { .. }) => return Some(started.elapsed()),
            Ok(e) => {
                eprintln!("watch: {e:?}");
                continue;
            }
            Err(_) => return None,
        }
    }
    None
}

/// Finding 6 of issue 24: the marker a killed teardown of 7508fe2 leaves (keyed by the name's
/// group marker, without a time) made the watch stand aside for good: a deleted default route
/// stayed unrepaired. Now a marker whose age is unknown is looked past once the watch has seen
/// it for the bound a teardown may take.
#[test]
fn a_teardown_marker_left_by_a_killed_teardown_stops_self_healing_for_a_bounded_time() {
    let lab = Lab::new();
    let spec = lab.router_spec("killed").build().unwrap();
    blocking::apply(&spec).unwrap();
    let mut legacy = [0u8; 16];
    legacy[..2].copy_from_slice(&[0x65, 0x78]);
    legacy[2..6].copy_from_slice(&link_group_marker(spec.name()).to_be_bytes());
    plant_marker(&lab, Ipv6Addr::from(legacy));
    let (watcher, events) = watched(&spec);
    lab.router.ip(&["route", "del", "default"]);
    let took = repaired_within(&events, Duration::from_secs(20))
        .expect("the default route stayed unrepaired under a teardown marker a crash left");
    eprintln!("repaired {took:?} after the route was deleted");
    assert!(blocking::check(&spec).unwrap().is_empty());
    watcher.stop().unwrap();
    blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
}

/// The same for the marker a killed teardown of this version leaves: it carries its time, so
/// one older than the bound is looked past at once, while a fresh one still makes the watch
/// look on and `ensure` refuse with its own error kind.
#[test]
fn a_teardown_marker_carries_its_time_and_ensure_refuses_while_a_teardown_runs() {
    let lab = Lab::new();
    let before = Snapshots::take(&lab);
    let spec = lab.router_spec("marked").build().unwrap();
    blocking::apply(&spec).unwrap();
    let id = apply_id(&spec);
    let marker = |since: u32| {
        let mut b = [0u8; 16];
        b[..2].copy_from_slice(&[0x65, 0x78]);
        b[2..6].copy_from_slice(&id.to_be_bytes());
        b[6..10].copy_from_slice(&since.to_be_bytes());
        Ipv6Addr::from(b)
    };
    // A teardown under way (its marker is fresh): ensure refuses, and changes nothing.
    let fresh = marker(boottime());
    plant_marker(&lab, fresh);
    lab.router.ip(&["route", "del", "default"]);
    let e = blocking::ensure(&spec).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TeardownInProgress, "{e}");
    assert!(e.to_string().contains("marked"), "{e}");
    assert!(!blocking::check(&spec).unwrap().is_empty());
    lab.router.ip(&[
        "-6",
        "route",
        "del",
        &format!("{fresh}/128"),
        "table",
        JOURNAL,
        "metric",
        "1",
    ]);
    // Left by a teardown killed a minute ago (or at boot, on a machine up for less): the
    // watch repairs at once, ensure too.
    plant_marker(&lab, marker(boottime().saturating_sub(60).max(1)));
    let (watcher, events) = watched(&spec);
    let took = repaired_within(&events, Duration::from_secs(5))
        .expect("the watch looked on under a marker a minute old");
    eprintln!("repaired in {took:?} under a stale marker");
    lab.router.ip(&["route", "del", "default"]);
    repaired_within(&events, Duration::from_secs(5)).expect("the second repair");
    watcher.stop().unwrap();
    lab.router.ip(&["route", "del", "default"]);
    assert_eq!(
        blocking::ensure(&spec).unwrap().action,
        egress_core::EnsureAction::Repaired
    );
    assert!(blocking::check(&spec).unwrap().is_empty());
    // A teardown takes the stale marker along.
    blocking::teardown_by_name(&CoreNetns::Path(lab.router.path().into()), spec.name()).unwrap();
    before.assert_restored("after the teardown of a router with a stale marker");
}

// ---------------------------------------------------------------------------------------------
// Random and hostile plants
// ---------------------------------------------------------------------------------------------

/// The router the plants surround, the names torn down without a record, and a router of
/// another name whose valid notes are planted too (never torn down: it is "another router").
const VICTIM: &str = "victim";
const NAMES: [&str; 4] = ["ghost", "r66929", "other-1", "x"];
const OTHER_ROUTER: &str = "elsewhere";

/// A restore entry no record can hold, each one a different way out: a path to `canary`, an
/// unknown key, a value that is not 0 or 1, a link name the kernel refuses.
fn hostile_entry(rng: &mut Rng, canary: &Canary) -> String {
    let c = canary.beneath_conf();
    rng.pick(&[
        format!("4{c}.f=1"),
        format!("6{c}.nn=1"),
        format!("4{c}.f=owned"),
        "4all.f=2".to_string(),
        "4all.f=99999999999999999999".to_string(),
        "4all.zz=1".to_string(),
        "4eth0.f=-1".to_string(),
        "4aaaaaaaaaaaaaaaa.f=1".to_string(),
        "4a:b.f=1".to_string(),
        "4..f=1".to_string(),
        "5all.f=0".to_string(),
    ])
}

/// A crash record's text that is not one: a header naming `name`, then at least one entry no
/// record can hold; or garbage; or (for `name` only) a truncated one, which is its debris.
fn hostile_record(rng: &mut Rng, canary: &Canary, name: &str) -> String {
    let link = rng.pick(&["eth0", "macvlan0", "../../x", "a/b"]);
    let id = rng.next_u64() as u32;
    let mut text = format!(
        "egress/2 r={name} id={id:08x} link={link} c={} up={}",
        rng.below(2),
        rng.below(2)
    );
    match rng.below(4) {
        0 => text.truncate(11 + name.len() + 1 + rng.below(20)),
        1 => text = format!("{text} {}", "\u{a0}/\0%:".repeat(1 + rng.below(4))),
        _ => {
            for _ in 0..1 + rng.below(3) {
                text += " ";
                text += &hostile_entry(rng, canary);
            }
        }
    }
    text
}

/// One plant: what it adds to the router namespace, for `ip -6 -batch` (routes) or `nft`.
enum Plant {
    Routes(String),
    Table(String),
}

fn marker_line(tag: [u8; 2], key: u32, rest: &[u8]) -> String {
    let mut b = [0u8; 16];
    b[..2].copy_from_slice(&tag);
    b[2..6].copy_from_slice(&key.to_be_bytes());
    b[6..6 + rest.len()].copy_from_slice(rest);
    format!(
        "route add blackhole {}/128 table {JOURNAL} proto 158 metric 1\n",
        Ipv6Addr::from(b)
    )
}

/// A random plant: hostile record notes (for any name, the victim's too), a look-alike table
/// whose comment is a hostile record, markers of every kind with random keys and times, a
/// claim of another name, notes whose ids collide, or far too many notes.
fn plant(rng: &mut Rng, canary: &Canary, victim_id: u32) -> Plant {
    let mut names = NAMES.to_vec();
    names.push(VICTIM);
    let name = rng.pick(&names);
    let notes = |text: &str, id: u32| {
        text.as_bytes()
            .chunks(10)
            .enumerate()
            .map(|(i, chunk)| {
                format!(
                    "route add blackhole {}/128 table {JOURNAL} proto 158 metric {}\n",
                    note_address([0x65, 0x67], id, chunk),
                    i + 1
                )
            })
            .collect::<String>()
    };
    match rng.below(8) {
        0 | 1 => Plant::Routes(notes(
            &hostile_record(rng, canary, name),
            rng.next_u64() as u32,
        )),
        2 => {
            // A text that is not one, with the id of the victim's record: it mixes with it.
            let text = hostile_record(rng, canary, VICTIM);
            let mut lines = notes(&text, victim_id);
            // Above the victim's own places: its record stays whole.
            lines = lines.replace(" metric ", " metric 5");
            Plant::Routes(lines)
        }
        3 => {
            let other = rng.pick(&NAMES);
            let comment: String = hostile_record(rng, canary, other)
                .chars()
                .filter(|c| !c.is_control() && *c != '"')
                .take(100)
                .collect();
            Plant::Table(format!(
                "table inet egress_{} {{ comment \"{comment}\" }}",
                other.replace('-', "_")
            ))
        }
        4 => {
            let tag = rng.pick(&[[0x65, 0x78], [0x65, 0x63], [0x65, 0x72]]);
            let key = match rng.below(3) {
                0 => link_group_marker(rng.pick(&NAMES)),
                1 => rng.next_u64() as u32,
                _ => rng.next_u64() as u32 | 1,
            };
            let rest: Vec<u8> = (0..rng.below(11)).map(|_| rng.next_u64() as u8).collect();
            Plant::Routes(marker_line(tag, key, &rest))
        }
        5 => {
            let c = canary.beneath_conf();
            let claim = format!(
                "ha/1 r={} i={c} l=eth0 c=0 s=203.0.113.7/24 g=- m=- o=- a=1,100",
                rng.pick(&NAMES)
            );
            Plant::Routes(notes(&claim, rng.next_u64() as u32).replace("6567:", "6569:"))
        }
        6 => {
            // Two texts with one id: neither is whole.
            let id = rng.next_u64() as u32;
            let a = notes(&hostile_record(rng, canary, name), id);
            let b = notes(&format!("egress/2 r={name} id={id:08x}"), id)
                .replace(" metric ", " metric 9");
            Plant::Routes(a + &b)
        }
        _ => {
            // Far more notes than any text egress writes.
            let text = "egress/2 ".to_string() + &"4all.f=1 ".repeat(460);
            Plant::Routes(notes(&text, rng.next_u64() as u32))
        }
    }
}

/// The lines of the router namespace's snapshot that no operation on `VICTIM` (or on a name
/// without a record) may change: everything but the victim's own objects (its macvlan and
/// what is on it, routes and addresses with our protocol, its table, the journal tables with
/// its notes, markers and the default routes it saved), and sysctls.
fn foreign(s: &Snapshot) -> Vec<String> {
    s.lines()
        .iter()
        .filter(|l| !l.starts_with("sysctl "))
        .filter(|l| {
            !l.contains(&format!("\"table\":\"{JOURNAL}\""))
                && !l.contains("\"table\":\"1701278317\"")
        })
        .filter(|l| !l.contains("macvlan0"))
        .filter(|l| !l.contains("\"protocol\":\"158\"") && !l.contains("\"protocol\":158"))
        .filter(|l| !l.contains("egress_victim"))
        .cloned()
        .collect()
}

/// Property (issue 24): random and hostile notes, table comments and markers — path
/// traversal, long names, unknown keys, huge values, ids that collide, notes of another router,
/// forged link groups — never make a teardown, an ensure, a watch or a CNI DEL write outside
/// the conf entries (a canary directory they all point at stays empty), touch an object that
/// is not the router's, or make a teardown of a name without a record change anything but
/// that name's debris.
#[test]
fn hostile_plants_reach_nothing_beyond_the_routers_own() {
    let mut rng = Rng(seed("hostile plants"));
    let lab = Lab::new();
    let canary = Canary::new("plants");
    let before = Snapshots::take(&lab);
    let spec = lab.router_spec(VICTIM).build().unwrap();
    blocking::apply(&spec).unwrap();
    let victim_id = apply_id(&spec);
    // Another router's valid record, and macvlans that carry the group markers of the names
    // torn down and of the victim (a link group is a hint, never a proof).
    plant_notes(
        &lab.router,
        [0x65, 0x67],
        0x0e15_e0e0,
        format!("egress/2 r={OTHER_ROUTER} id=0e15e0e0 link=eth0 c=0 up=1 4all.f=0").as_bytes(),
    );
    for (i, name) in NAMES.iter().chain([&VICTIM]).enumerate() {
        let link = format!("fg{i}");
        lab.router.ip(&[
            "link", "add", &link, "link", "eth0", "type", "macvlan", "mode", "private",
        ]);
        let group = link_group_marker(name).to_string();
        lab.router
            .ip(&["link", "set", &link, "group", &group, "up"]);
    }
    let cni_container = "c0ffee0000000hostile";
    let cni_router = egress_cni::router_name(cni_container, "net1");
    plant_notes(
        &lab.router,
        [0x65, 0x67],
        0x0000_c0de,
        hostile_record(&mut rng, &canary, &cni_router).as_bytes(),
    );
    let untouched = foreign(&Snapshot::take(&lab.router));
    let mut planted_routes = 0;
    for case in 0..12 {
        let mut batch = String::new();
        for _ in 0..1 + rng.below(4) {
            match plant(&mut rng, &canary, victim_id) {
                Plant::Routes(lines) => {
                    planted_routes += lines.lines().count();
                    batch += &lines;
                }
                Plant::Table(script) => {
                    let _ = lab.router.try_exec(&["nft", &script]);
                }
            }
        }
        if !batch.is_empty() {
            // A plant may collide with an earlier one: -force goes on.
            let file =
                std::env::temp_dir().join(format!("egt-{}-plants.batch", std::process::id()));
            std::fs::write(&file, &batch).unwrap();
            let _ = lab
                .router
                .try_exec(&["ip", "-6", "-force", "-batch", file.to_str().unwrap()]);
            std::fs::remove_file(&file).unwrap();
        }
        let now_foreign = foreign(&Snapshot::take(&lab.router));
        // A teardown of a name without a record: nothing but that name's debris goes.
        let name = rng.pick(&NAMES);
        let planted = Snapshot::take(&lab.router);
        blocking::teardown_by_name(spec.netns(), name)
            .unwrap_or_else(|e| panic!("case {case}: teardown of {name}: {e}"));
        let after = Snapshot::take(&lab.router);
        let gone: Vec<&String> = planted
            .lines()
            .iter()
            .filter(|l| !after.lines().contains(l))
            .collect();
        assert!(
            gone.iter()
                .all(|l| l.contains(&format!("\"table\":\"{JOURNAL}\"")) && l.contains("6567:")),
            "case {case}: a teardown of {name} (no record) removed {gone:?}"
        );
        assert!(
            after.lines().iter().all(|l| planted.lines().contains(l)),
            "case {case}: a teardown of {name} added something"
        );
        canary.assert_empty(&format!("case {case}: teardown of {name}"));
        // The victim is repaired by a watch, and by ensure, through whatever is planted.
        let (watcher, events) = watched(&spec);
        lab.router.ip(&["route", "del", "default"]);
        repaired_within(&events, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("case {case}: the watch did not repair the victim"));
        watcher.stop().unwrap();
        lab.router.ip(&["link", "set", "macvlan0", "down"]);
        let outcome =
            blocking::ensure(&spec).unwrap_or_else(|e| panic!("case {case}: ensure: {e}"));
        assert_eq!(outcome.action, egress_core::EnsureAction::Repaired);
        assert!(blocking::check(&spec).unwrap().is_empty(), "case {case}");
        canary.assert_empty(&format!("case {case}: ensure and watch"));
        assert_eq!(
            foreign(&Snapshot::take(&lab.router)),
            now_foreign,
            "case {case}: an object that is not the victim's changed"
        );
    }
    let (code, stderr) = cni_del(&lab, cni_container);
    assert_eq!(code, Some(0), "{stderr}");
    canary.assert_empty("CNI DEL");
    blocking::teardown_by_name(spec.netns(), VICTIM).unwrap();
    canary.assert_empty("the victim's teardown");
    assert!(blocking::inspect(spec.netns(), VICTIM).unwrap().is_none());
    // What was there before the plants and is not the victim's is still there.
    let after = foreign(&Snapshot::take(&lab.router));
    let lost: Vec<&String> = untouched.iter().filter(|l| !after.contains(l)).collect();
    assert!(lost.is_empty(), "the victim's teardown took {lost:?}");
    eprintln!("hostile plants: {planted_routes} routes planted over 12 cases");
    drop(before);
}
