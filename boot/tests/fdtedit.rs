//! Host tests of the in-place device-tree editor (`boot/src/fdtedit.rs`, safe code over a
//! byte slice), checked by reading the result back with the `fdt` crate.

#[path = "../src/fdtedit.rs"]
#[allow(dead_code)]
mod fdtedit;

use fdtedit::{EditError, FdtEdit};

/// A small tree: root with 2-cell addresses and sizes, /chosen with stdout-path, and
/// /memory@40000000 with 1 GiB; `room` free bytes after the blocks.
fn tree(room: usize) -> Vec<u8> {
    let mut strings = Vec::new();
    let mut name = |n: &str| {
        let off = strings.len() as u32;
        strings.extend_from_slice(n.as_bytes());
        strings.push(0);
        off
    };
    let (ac, sc, so, dt, reg) =
        (name("#address-cells"), name("#size-cells"), name("stdout-path"), name("device_type"), name("reg"));
    let mut st = Vec::new();
    let word = |st: &mut Vec<u8>, w: u32| st.extend_from_slice(&w.to_be_bytes());
    let begin = |st: &mut Vec<u8>, n: &str| {
        st.extend_from_slice(&1u32.to_be_bytes());
        st.extend_from_slice(n.as_bytes());
        st.push(0);
        while !st.len().is_multiple_of(4) {
            st.push(0);
        }
    };
    let prop = |st: &mut Vec<u8>, off: u32, v: &[u8]| {
        st.extend_from_slice(&3u32.to_be_bytes());
        st.extend_from_slice(&(v.len() as u32).to_be_bytes());
        st.extend_from_slice(&off.to_be_bytes());
        st.extend_from_slice(v);
        while !st.len().is_multiple_of(4) {
            st.push(0);
        }
    };
    begin(&mut st, "");
    prop(&mut st, ac, &2u32.to_be_bytes());
    prop(&mut st, sc, &2u32.to_be_bytes());
    begin(&mut st, "chosen");
    prop(&mut st, so, b"/pl011@9000000\0");
    word(&mut st, 2);
    begin(&mut st, "memory@40000000");
    prop(&mut st, dt, b"memory\0");
    prop(&mut st, reg, &[0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0]);
    word(&mut st, 2);
    word(&mut st, 2);
    word(&mut st, 9);
    let rsv = 40;
    let off_struct = rsv + 16;
    let off_strings = off_struct + st.len();
    let total = off_strings + strings.len() + room;
    let mut b = Vec::with_capacity(total);
    for w in [0xd00d_feed, total, off_struct, off_strings, rsv, 17, 16, 0, strings.len(), st.len()] {
        b.extend_from_slice(&(w as u32).to_be_bytes());
    }
    b.extend_from_slice(&[0; 16]);
    b.extend_from_slice(&st);
    b.extend_from_slice(&strings);
    b.resize(total, 0);
    b
}

fn memory(b: &[u8]) -> Vec<(u64, u64)> {
    let f = fdt::Fdt::new(b).unwrap();
    f.memory().regions().map(|r| (r.starting_address as u64, r.size.unwrap() as u64)).collect()
}

#[test]
fn adds_replaces_and_resizes_chosen_properties() {
    let mut b = tree(4096);
    let mut e = FdtEdit::new(&mut b).unwrap();
    e.set_prop("/chosen", "bootargs", b"console=ttyAMA0 kcore.host=0x76800000\0").unwrap();
    e.set_prop("/chosen", "linux,initrd-start", &0x7000_0000u64.to_be_bytes()).unwrap();
    e.set_prop("/chosen", "linux,initrd-end", &0x7010_0000u64.to_be_bytes()).unwrap();
    // Shorter, then longer than before: the property moves, the rest of the tree stays.
    e.set_prop("/chosen", "bootargs", b"quiet\0").unwrap();
    e.set_prop("/chosen", "bootargs", b"console=ttyAMA0 panic=-1 quiet kcore.log=debug\0").unwrap();
    let f = fdt::Fdt::new(&b).unwrap();
    let chosen = f.chosen();
    assert_eq!(chosen.bootargs(), Some("console=ttyAMA0 panic=-1 quiet kcore.log=debug"));
    let c = f.find_node("/chosen").unwrap();
    assert_eq!(c.property("linux,initrd-start").unwrap().as_usize(), Some(0x7000_0000));
    assert_eq!(c.property("linux,initrd-end").unwrap().as_usize(), Some(0x7010_0000));
    assert_eq!(c.property("stdout-path").unwrap().as_str(), Some("/pl011@9000000"));
    assert_eq!(memory(&b), [(0x4000_0000, 0x4000_0000)]);
}

#[test]
fn memory_node_takes_several_ranges_and_reservations_are_added() {
    let mut b = tree(4096);
    let mut e = FdtEdit::new(&mut b).unwrap();
    assert!(e.node("/nothere").is_none());
    let mem = e.node("/memory").expect("a component without unit address matches memory@...");
    assert_eq!(e.node("/memory@40000000"), Some(mem));
    assert_eq!(e.prop(mem, "device_type"), Some(&b"memory\0"[..]));
    let mut reg = Vec::new();
    for (s, len) in [(0x4000_0000u64, 0x3c20_0000u64), (0x7c44_0000, 0x31c_0000), (0x7fc0_0000, 0x40_0000)] {
        reg.extend_from_slice(&s.to_be_bytes());
        reg.extend_from_slice(&len.to_be_bytes());
    }
    e.set_prop_at(mem, "reg", &reg).unwrap();
    e.add_mem_reserve(0x7c44_0000, 0x2f_0000).unwrap();
    e.add_mem_reserve(0x7fc0_0000, 0x3e_0000).unwrap();
    assert_eq!(memory(&b), [(0x4000_0000, 0x3c20_0000), (0x7c44_0000, 0x31c_0000), (0x7fc0_0000, 0x40_0000)]);
    let f = fdt::Fdt::new(&b).unwrap();
    let rsv: Vec<_> = f.memory_reservations().map(|r| (r.address() as u64, r.size() as u64)).collect();
    assert_eq!(rsv, [(0x7c44_0000, 0x2f_0000), (0x7fc0_0000, 0x3e_0000)]);
    assert_eq!(f.find_node("/chosen").unwrap().property("stdout-path").unwrap().as_str(), Some("/pl011@9000000"));
}

#[test]
fn refuses_what_does_not_fit_and_what_is_not_a_tree() {
    let mut b = tree(8);
    let before = b.clone();
    let mut e = FdtEdit::new(&mut b).unwrap();
    assert_eq!(e.set_prop("/chosen", "bootargs", b"far too long for eight bytes\0"), Err(EditError::NoRoom));
    assert_eq!(e.set_prop("/absent", "x", b"\0"), Err(EditError::NoNode));
    // A same-size rewrite needs no room.
    let mem = e.node("/memory").unwrap();
    e.set_prop_at(mem, "reg", &[0, 0, 0, 0, 0x40, 0x40, 0, 0, 0, 0, 0, 0, 0x3f, 0xc0, 0, 0]).unwrap();
    assert_eq!(memory(&b), [(0x4040_0000, 0x3fc0_0000)]);
    assert_eq!(b.len(), before.len());
    let mut bad = before.clone();
    bad[0] = 0;
    assert!(FdtEdit::new(&mut bad).is_err());
    let mut short = before.clone();
    short.truncate(before.len() - 4);
    assert!(FdtEdit::new(&mut short).is_err(), "totalsize must match the buffer");
}
