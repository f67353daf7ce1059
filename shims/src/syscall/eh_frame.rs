//! Function extents from `.eh_frame_hdr`'s search table and the FDEs it
//! points at, read from the module's memory (bounds-checked against its
//! readable segments).
//!
//! Only what the rewriter needs: the start and length of every function
//! with an FDE (its `pc_begin` and `pc_range`), for the CIE augmentations
//! compilers emit (`zR`, `zPLR`, ...).

const DW_EH_PE_OMIT: u8 = 0xff;

/// Whether `[addr, addr + len)` may be read (lies in a readable segment
/// of the module).
pub type Readable<'a> = &'a dyn Fn(u64, u64) -> bool;

/// A cursor over the module's memory.
struct Reader<'a> {
    readable: Readable<'a>,
    pos: u64,
}

impl Reader<'_> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        if !(self.readable)(self.pos, N as u64) {
            return None;
        }
        let mut out = [0u8; N];
        // SAFETY: the N bytes lie in a readable segment of the module.
        unsafe {
            std::ptr::copy_nonoverlapping(self.pos as *const u8, out.as_mut_ptr(), N);
        }
        self.pos += N as u64;
        Some(out)
    }

    fn u8(&mut self) -> Option<u8> {
        self.bytes::<1>().map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.bytes::<4>().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.bytes::<8>().map(u64::from_le_bytes)
    }

    fn uleb(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// A NUL-terminated string (an augmentation: short).
    fn cstr(&mut self) -> Option<Vec<u8>> {
        let mut s = Vec::new();
        for _ in 0..32 {
            match self.u8()? {
                0 => return Some(s),
                c => s.push(c),
            }
        }
        None
    }

    /// A pointer in DWARF EH encoding `enc`; `datarel` is the base of
    /// `DW_EH_PE_datarel`.
    fn encoded(&mut self, enc: u8, datarel: u64) -> Option<u64> {
        let at = self.pos;
        let value = match enc & 0x0f {
            0x00 => self.u64()?,
            0x01 => self.uleb()?,
            0x02 => u64::from(u16::from_le_bytes(self.bytes::<2>()?)),
            0x03 => u64::from(self.u32()?),
            0x04 => self.u64()?,
            0x0a => i16::from_le_bytes(self.bytes::<2>()?) as i64 as u64,
            0x0b => self.u32()? as i32 as i64 as u64,
            0x0c => self.u64()?,
            _ => return None,
        };
        let base = match enc & 0x70 {
            0x00 => 0,
            0x10 => at,
            0x30 => datarel,
            _ => return None,
        };
        Some(base.wrapping_add(value))
    }
}

/// `(start, length)` of every function with an FDE in the search
/// table at `hdr`.
pub fn functions(hdr: u64, readable: Readable<'_>) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut r = Reader { readable, pos: hdr };
    let Some([version, eh_ptr_enc, count_enc, table_enc]) = r.bytes::<4>() else {
        return out;
    };
    if version != 1 || table_enc == DW_EH_PE_OMIT || count_enc == DW_EH_PE_OMIT {
        return out;
    }
    if r.encoded(eh_ptr_enc, hdr).is_none() {
        return out;
    }
    let Some(count) = r.encoded(count_enc, hdr) else {
        return out;
    };
    for _ in 0..count.min(1 << 22) {
        let (Some(_start), Some(fde)) = (r.encoded(table_enc, hdr), r.encoded(table_enc, hdr))
        else {
            break;
        };
        if let Some(f) = fde_extent(readable, fde) {
            out.push(f);
        }
    }
    out
}

/// The `(pc_begin, pc_range)` of the FDE at `fde`.
fn fde_extent(readable: Readable<'_>, fde: u64) -> Option<(u64, u64)> {
    let mut r = Reader { readable, pos: fde };
    let len = r.u32()?;
    if len == 0xffff_ffff || len == 0 {
        return None;
    }
    let cie_ptr_at = r.pos;
    let cie_off = r.u32()?;
    if cie_off == 0 {
        return None;
    }
    let enc = cie_pointer_encoding(readable, cie_ptr_at.checked_sub(u64::from(cie_off))?)?;
    let start = r.encoded(enc, 0)?;
    let range = r.encoded(enc & 0x0f, 0)?;
    Some((start, range))
}

/// The FDE pointer encoding (`R` augmentation) of the CIE at `cie`.
fn cie_pointer_encoding(readable: Readable<'_>, cie: u64) -> Option<u8> {
    let mut r = Reader { readable, pos: cie };
    let len = r.u32()?;
    if len == 0xffff_ffff || r.u32()? != 0 {
        return None;
    }
    let version = r.u8()?;
    let aug = r.cstr()?;
    if version >= 4 {
        r.u8()?;
        r.u8()?;
    }
    r.uleb()?; // code alignment
    r.uleb()?; // data alignment (SLEB: skipping needs no sign)
    if version == 1 {
        r.u8()?;
    } else {
        r.uleb()?;
    }
    if aug.first() != Some(&b'z') {
        return Some(0); // absptr
    }
    r.uleb()?; // augmentation data length
    for &c in &aug[1..] {
        match c {
            b'R' => return r.u8(),
            b'L' => {
                r.u8()?;
            }
            b'P' => {
                let penc = r.u8()?;
                r.encoded(penc & 0x7f, 0)?;
            }
            b'S' | b'B' => {}
            _ => return None,
        }
    }
    Some(0)
}
