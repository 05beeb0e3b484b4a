//! Notes: text kept in the addresses of IPv6 `blackhole` routes with protocol 158 in the
//! journal routing table. A note's address is a two-byte tag, the apply id (4 bytes) and 10
//! bytes of the text; its metric is its place in the text (from 1). The crash record (`6567:`)
//! and the identity notes (`6569:`) are written this way.
//!
//! Reading them back is reading input anyone with `CAP_NET_ADMIN` in the namespace can forge:
//! a text is whole only when its notes are exactly the places 1 to n, at most
//! [`MAX_NOTES`], its bytes UTF-8 with NUL only as the padding of the last note.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr},
};

use netlink_packet_route::{
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
    AddressFamily,
};

use super::JOURNAL_TABLE;
use crate::objects::route::{Route, ROUTE_PROTOCOL};

/// Bytes of text per note: an IPv6 address is 16 bytes, after the two-byte tag and the
/// four-byte apply id.
pub(crate) const NOTE_PAYLOAD: usize = 10;
/// The most notes one text is read from (a text of 4,000 bytes): more are not a text egress
/// writes.
pub(crate) const MAX_NOTES: usize = 400;

/// `text` as notes tagged `tag`: blackhole routes in [`JOURNAL_TABLE`] whose addresses are the
/// tag, the apply id `id` and [`NOTE_PAYLOAD`] bytes of the text each; a note's metric is its
/// place in the text (from 1).
pub(crate) fn text_notes(tag: [u8; 2], id: u32, text: &str) -> Vec<Route> {
    text.as_bytes()
        .chunks(NOTE_PAYLOAD)
        .enumerate()
        .map(|(seq, chunk)| {
            let mut bytes = [0u8; 16];
            bytes[..2].copy_from_slice(&tag);
            bytes[2..6].copy_from_slice(&id.to_be_bytes());
            bytes[6..6 + chunk.len()].copy_from_slice(chunk);
            note(Ipv6Addr::from(bytes), seq as u32 + 1)
        })
        .collect()
}

/// The notes tagged `tag` among `routes`, by apply id, each set sorted by place.
pub(crate) fn note_sets(tag: [u8; 2], routes: &[Route]) -> BTreeMap<u32, Vec<&Route>> {
    let mut by_id: BTreeMap<u32, Vec<&Route>> = BTreeMap::new();
    for r in routes.iter().filter(|r| is_tagged(r, tag)) {
        by_id.entry(note_id(r)).or_default().push(r);
    }
    for notes in by_id.values_mut() {
        notes.sort_by_key(|r| r.metric());
    }
    by_id
}

/// The text a set of notes (sorted by place) holds, when it is whole: exactly the places 1 to
/// n (n at most [`MAX_NOTES`]), UTF-8, NUL only at the end.
pub(crate) fn whole_text(notes: &[&Route]) -> Option<String> {
    if notes.len() > MAX_NOTES
        || notes
            .iter()
            .enumerate()
            .any(|(i, n)| n.metric() as usize != i + 1)
    {
        return None;
    }
    let mut text = Vec::with_capacity(notes.len() * NOTE_PAYLOAD);
    for n in notes {
        text.extend_from_slice(&address(n)[6..]);
    }
    while text.last() == Some(&0) {
        text.pop();
    }
    if text.contains(&0) {
        return None;
    }
    String::from_utf8(text).ok()
}

/// The texts the notes tagged `tag` among `routes` hold, one per apply id whose notes are
/// whole ([`whole_text`]), each with its id and its notes.
pub(crate) fn read_text_notes(tag: [u8; 2], routes: &[Route]) -> Vec<(u32, String, Vec<&Route>)> {
    note_sets(tag, routes)
        .into_iter()
        .filter_map(|(id, notes)| Some((id, whole_text(&notes)?, notes)))
        .collect()
}

/// Whether `r` is a note tagged `tag` (of any router): a `/128` blackhole route of ours in
/// [`JOURNAL_TABLE`] whose address begins with the tag.
pub(crate) fn is_tagged(r: &Route, tag: [u8; 2]) -> bool {
    r.table == JOURNAL_TABLE
        && r.is_ours()
        && r.kind == RouteType::BlackHole
        && r.dst.prefix() == 128
        && address(r)[..2] == tag
}

/// The 16 bytes of a note's address (zero for an IPv4 route).
pub(crate) fn address(r: &Route) -> [u8; 16] {
    match r.dst.ip() {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => [0; 16],
    }
}

/// The apply id in a note's address.
pub(crate) fn note_id(r: &Route) -> u32 {
    let b = address(r);
    u32::from_be_bytes([b[2], b[3], b[4], b[5]])
}

/// A note route: `blackhole ADDR/128 table JOURNAL_TABLE proto 158 metric SEQ`.
pub(crate) fn note(addr: Ipv6Addr, seq: u32) -> Route {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet6;
    m.header.destination_prefix_length = 128;
    m.header.table = RouteHeader::RT_TABLE_UNSPEC;
    m.header.protocol = RouteProtocol::from(ROUTE_PROTOCOL);
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::BlackHole;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(IpAddr::V6(
            addr,
        ))));
    m.attributes.push(RouteAttribute::Table(JOURNAL_TABLE));
    m.attributes.push(RouteAttribute::Priority(seq));
    Route::from_message(m).expect("a well-formed route")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: [u8; 2] = [0x65, 0x67];

    #[test]
    fn a_text_is_whole_only_with_every_place_once() {
        let notes = text_notes(TAG, 7, "0123456789abcdefghij-tail");
        assert_eq!(notes.len(), 3);
        let read = read_text_notes(TAG, &notes);
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].1, "0123456789abcdefghij-tail");
        // A place missing, or twice (a forged note beside a real one): no text.
        assert!(read_text_notes(TAG, &notes[1..]).is_empty());
        let mut twice = notes.clone();
        twice.extend(text_notes(TAG, 7, "9999999999"));
        assert!(read_text_notes(TAG, &twice).is_empty());
        // Another tag is another text.
        assert!(read_text_notes([0x65, 0x69], &notes).is_empty());
    }

    #[test]
    fn nul_pads_the_last_note_only_and_text_is_bounded() {
        let mut bytes = [0u8; 16];
        bytes[..2].copy_from_slice(&TAG);
        bytes[6..10].copy_from_slice(b"ab\0c");
        let forged = vec![note(Ipv6Addr::from(bytes), 1)];
        assert!(read_text_notes(TAG, &forged).is_empty());
        let long = "x".repeat(NOTE_PAYLOAD * MAX_NOTES + 1);
        assert!(read_text_notes(TAG, &text_notes(TAG, 1, &long)).is_empty());
        let longest = "x".repeat(NOTE_PAYLOAD * MAX_NOTES);
        assert_eq!(read_text_notes(TAG, &text_notes(TAG, 1, &longest)).len(), 1);
    }
}
