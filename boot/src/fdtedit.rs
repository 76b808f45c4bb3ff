//! In-place editing of a flattened device tree (the format of the Devicetree Specification,
//! chapter 5): set a property (growing or shrinking the structure block), add a string, add a
//! memory reservation. The blob's `totalsize` must leave room after its blocks for what is
//! added: the UEFI loader copies the firmware's tree into a larger buffer, and QEMU's `-kernel`
//! tree has 1 MiB. Safe code over a byte slice; nothing here reads outside it.

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

// Header fields (byte offsets, big-endian u32).
const H_TOTALSIZE: usize = 4;
const H_OFF_STRUCT: usize = 8;
const H_OFF_STRINGS: usize = 12;
const H_OFF_RSVMAP: usize = 16;
const H_SIZE_STRINGS: usize = 32;
const H_SIZE_STRUCT: usize = 36;

/// Why an edit failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditError {
    /// Not a device tree, or one whose blocks do not fit its size.
    Malformed,
    /// No room left in `totalsize` for the edit.
    NoRoom,
    /// The node is not there.
    NoNode,
}

/// A device tree being edited in place.
pub struct FdtEdit<'a> {
    b: &'a mut [u8],
}

const fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

impl<'a> FdtEdit<'a> {
    /// Edit the tree in `b`, which must be exactly its `totalsize` bytes long.
    pub fn new(b: &'a mut [u8]) -> Result<Self, EditError> {
        if b.len() < 40 {
            return Err(EditError::Malformed);
        }
        let e = FdtEdit { b };
        if e.rd(0) != MAGIC || e.rd(H_TOTALSIZE) as usize != e.b.len() {
            return Err(EditError::Malformed);
        }
        let blocks = [(H_OFF_STRUCT, H_SIZE_STRUCT), (H_OFF_STRINGS, H_SIZE_STRINGS)];
        if blocks.iter().any(|&(o, s)| e.hdr(o).checked_add(e.hdr(s)).is_none_or(|end| end > e.b.len()))
            || e.hdr(H_OFF_RSVMAP) >= e.b.len()
        {
            return Err(EditError::Malformed);
        }
        e.rsv_terminator().ok_or(EditError::Malformed)?;
        Ok(e)
    }

    fn rd(&self, off: usize) -> u32 {
        self.b.get(off..off + 4).map_or(END, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn wr(&mut self, off: usize, v: u32) {
        self.b[off..off + 4].copy_from_slice(&v.to_be_bytes());
    }

    fn hdr(&self, field: usize) -> usize {
        self.rd(field) as usize
    }

    fn add_hdr(&mut self, field: usize, delta: isize) {
        let v = self.hdr(field).wrapping_add_signed(delta);
        self.wr(field, v as u32);
    }

    /// Offset of the all-zero entry ending the memory reservation block.
    fn rsv_terminator(&self) -> Option<usize> {
        let mut off = self.hdr(H_OFF_RSVMAP);
        while off + 16 <= self.b.len() {
            if self.b[off..off + 16].iter().all(|&x| x == 0) {
                return Some(off);
            }
            off += 16;
        }
        None
    }

    /// End of the last block (what lies beyond is free room up to `totalsize`).
    fn used_end(&self) -> usize {
        let rsv_end = self.rsv_terminator().map_or(0, |t| t + 16);
        (self.hdr(H_OFF_STRUCT) + self.hdr(H_SIZE_STRUCT))
            .max(self.hdr(H_OFF_STRINGS) + self.hdr(H_SIZE_STRINGS))
            .max(rsv_end)
    }

    /// Open `n` zero bytes at `pos` in the block whose offset is header field `grown`, moving
    /// everything behind and the offsets of the other blocks that start at or behind `pos`.
    fn insert(&mut self, grown: usize, pos: usize, n: usize) -> Result<(), EditError> {
        let used = self.used_end();
        if used + n > self.b.len() || pos > used {
            return Err(EditError::NoRoom);
        }
        self.b.copy_within(pos..used, pos + n);
        self.b[pos..pos + n].fill(0);
        for f in [H_OFF_STRUCT, H_OFF_STRINGS, H_OFF_RSVMAP] {
            if f != grown && self.hdr(f) >= pos {
                self.add_hdr(f, n as isize);
            }
        }
        Ok(())
    }

    /// Remove `n` bytes at `pos` (inside a block, after its start), the inverse of
    /// [`Self::insert`].
    fn remove(&mut self, pos: usize, n: usize) {
        let used = self.used_end();
        self.b.copy_within(pos + n..used, pos);
        self.b[used - n..used].fill(0);
        for f in [H_OFF_STRUCT, H_OFF_STRINGS, H_OFF_RSVMAP] {
            if self.hdr(f) > pos {
                self.add_hdr(f, -(n as isize));
            }
        }
    }

    /// The offset of the token after the one at `off` in the structure block.
    fn next_token(&self, off: usize) -> usize {
        match self.rd(off) {
            BEGIN_NODE => {
                let name = &self.b[off + 4..];
                let len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
                off + 4 + pad4(len + 1)
            }
            PROP => off + 12 + pad4(self.rd(off + 4) as usize),
            _ => off + 4,
        }
    }

    fn struct_end(&self) -> usize {
        self.hdr(H_OFF_STRUCT) + self.hdr(H_SIZE_STRUCT)
    }

    fn node_name(&self, off: usize) -> &[u8] {
        let name = &self.b[off + 4..self.struct_end()];
        &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())]
    }

    fn string_at(&self, nameoff: usize) -> &[u8] {
        let start = self.hdr(H_OFF_STRINGS) + nameoff;
        let s = self.b.get(start..self.hdr(H_OFF_STRINGS) + self.hdr(H_SIZE_STRINGS)).unwrap_or(&[]);
        &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())]
    }

    /// Offsets of every node's BEGIN_NODE token, in order.
    pub fn nodes(&self) -> impl Iterator<Item = usize> + '_ {
        let end = self.struct_end();
        let mut off = self.hdr(H_OFF_STRUCT);
        core::iter::from_fn(move || {
            while off < end {
                let here = off;
                let tok = self.rd(here);
                if tok == END {
                    return None;
                }
                off = self.next_token(here);
                if tok == BEGIN_NODE {
                    return Some(here);
                }
            }
            None
        })
    }

    /// The node at `path` ("/" or "/a/b"; a component without a unit address also matches a
    /// name with one).
    pub fn node(&self, path: &str) -> Option<usize> {
        let end = self.struct_end();
        let mut off = self.hdr(H_OFF_STRUCT);
        let mut comps = path.split('/').filter(|c| !c.is_empty());
        let mut want = comps.next();
        // Depth of the node whose children are being searched, and the current depth.
        let (mut matched, mut depth) = (0usize, 0usize);
        while off < end {
            match self.rd(off) {
                BEGIN_NODE => {
                    depth += 1;
                    if depth == 1 {
                        if want.is_none() {
                            return Some(off);
                        }
                        matched = 1;
                    } else if depth == matched + 1 {
                        let name = self.node_name(off);
                        let c = want.unwrap_or("").as_bytes();
                        let base = name.split(|&x| x == b'@').next().unwrap_or(name);
                        if name == c || (!c.contains(&b'@') && base == c) {
                            want = comps.next();
                            if want.is_none() {
                                return Some(off);
                            }
                            matched = depth;
                        }
                    }
                }
                END_NODE => {
                    if depth == matched && matched > 0 {
                        return None; // the parent ended without the child
                    }
                    depth = depth.saturating_sub(1);
                }
                END => return None,
                _ => {}
            }
            off = self.next_token(off);
        }
        None
    }

    /// The PROP token of property `name` directly in the node at `node`.
    fn prop_token(&self, node: usize, name: &str) -> Option<usize> {
        let mut off = self.next_token(node);
        loop {
            match self.rd(off) {
                PROP => {
                    if self.string_at(self.rd(off + 8) as usize) == name.as_bytes() {
                        return Some(off);
                    }
                }
                NOP => {}
                _ => return None,
            }
            off = self.next_token(off);
        }
    }

    /// The value of property `name` of the node at `node`.
    pub fn prop(&self, node: usize, name: &str) -> Option<&[u8]> {
        let t = self.prop_token(node, name)?;
        let len = self.rd(t + 4) as usize;
        self.b.get(t + 12..t + 12 + len)
    }

    /// The offset of `name` in the strings block, added if it is not there.
    fn string(&mut self, name: &str) -> Result<u32, EditError> {
        let (start, size) = (self.hdr(H_OFF_STRINGS), self.hdr(H_SIZE_STRINGS));
        let block = &self.b[start..start + size];
        let n = name.as_bytes();
        let mut i = 0;
        while i < block.len() {
            let len = block[i..].iter().position(|&c| c == 0).unwrap_or(block.len() - i);
            if &block[i..i + len] == n {
                return Ok(i as u32);
            }
            i += len + 1;
        }
        self.insert(H_OFF_STRINGS, start + size, n.len() + 1)?;
        self.b[start + size..start + size + n.len()].copy_from_slice(n);
        self.add_hdr(H_SIZE_STRINGS, (n.len() + 1) as isize);
        Ok(size as u32)
    }

    /// Set property `name` of the node at `path` to `value`, adding it if absent.
    pub fn set_prop(&mut self, path: &str, name: &str, value: &[u8]) -> Result<(), EditError> {
        let node = self.node(path).ok_or(EditError::NoNode)?;
        self.set_prop_at(node, name, value)
    }

    /// [`Self::set_prop`] for the node at offset `node` (from [`Self::nodes`] or [`Self::node`]).
    pub fn set_prop_at(&mut self, node: usize, name: &str, value: &[u8]) -> Result<(), EditError> {
        if let Some(t) = self.prop_token(node, name) {
            let old = self.rd(t + 4) as usize;
            if pad4(old) == pad4(value.len()) {
                self.wr(t + 4, value.len() as u32);
                self.b[t + 12..t + 12 + pad4(old)].fill(0);
                self.b[t + 12..t + 12 + value.len()].copy_from_slice(value);
                return Ok(());
            }
            let room = self.b.len() - self.used_end() + 12 + pad4(old);
            if room < 12 + pad4(value.len()) + name.len() + 1 {
                return Err(EditError::NoRoom);
            }
            self.remove(t, 12 + pad4(old));
            self.add_hdr(H_SIZE_STRUCT, -((12 + pad4(old)) as isize));
        }
        // A strings block in front of the structure block (unusual) moves the node.
        let before = self.hdr(H_OFF_STRUCT);
        let nameoff = self.string(name)?;
        let node = node + (self.hdr(H_OFF_STRUCT) - before);
        let at = self.next_token(node);
        let len = 12 + pad4(value.len());
        self.insert(H_OFF_STRUCT, at, len)?;
        self.wr(at, PROP);
        self.wr(at + 4, value.len() as u32);
        self.wr(at + 8, nameoff);
        self.b[at + 12..at + 12 + value.len()].copy_from_slice(value);
        self.add_hdr(H_SIZE_STRUCT, len as isize);
        Ok(())
    }

    /// Turn property `name` of the node at `node` into NOP tokens (Devicetree Specification
    /// 5.4.1: a parser ignores FDT_NOP), so the tree no longer has it and nothing moves.
    /// Whether it was there.
    pub fn nop_prop(&mut self, node: usize, name: &str) -> bool {
        let Some(t) = self.prop_token(node, name) else { return false };
        let end = self.next_token(t);
        for off in (t..end).step_by(4) {
            self.wr(off, NOP);
        }
        true
    }

    /// Turn the node at `node`, its properties and all its children into NOP tokens.
    pub fn nop_node(&mut self, node: usize) -> Result<(), EditError> {
        let end = self.struct_end();
        let (mut off, mut depth) = (node, 0usize);
        while off < end {
            let next = self.next_token(off);
            match self.rd(off) {
                BEGIN_NODE => depth += 1,
                END_NODE => depth -= 1,
                END => return Err(EditError::Malformed),
                _ => {}
            }
            for w in (off..next).step_by(4) {
                self.wr(w, NOP);
            }
            if depth == 0 {
                return Ok(());
            }
            off = next;
        }
        Err(EditError::Malformed)
    }

    /// Add `[addr, addr + size)` to the memory reservation block (`/memreserve/`).
    pub fn add_mem_reserve(&mut self, addr: u64, size: u64) -> Result<(), EditError> {
        let t = self.rsv_terminator().ok_or(EditError::Malformed)?;
        self.insert(H_OFF_RSVMAP, t, 16)?;
        self.b[t..t + 8].copy_from_slice(&addr.to_be_bytes());
        self.b[t + 8..t + 16].copy_from_slice(&size.to_be_bytes());
        Ok(())
    }
}
