//! 12x-13x: the CPU a guest sees (`probe-guest.S`): sanitised ID registers, hidden features
//! refused with an Undefined Instruction, emulated debug registers, SGI and timer exits, set/way
//! maintenance ignored. 14x-15x: a register sweep (`sweep-guest.S`): nothing of the host's
//! registers reaches a guest, nothing of a guest's reaches the host, and each side's values
//! survive the other's.

use super::{check, exit, faults, hvc, load_prog, print, print_dec, print_hex, status};
use core::arch::asm;
use kcore::abi;

const PROBE_IMG: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probe-guest-prog.img"));
const PROBE_SIG: &[u8; 64] = include_bytes!(concat!(env!("OUT_DIR"), "/probe-guest-prog.sig"));
const SWEEP_IMG: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sweep-guest-prog.img"));
const SWEEP_SIG: &[u8; 64] = include_bytes!(concat!(env!("OUT_DIR"), "/sweep-guest-prog.sig"));

/// VCPU_RUN's x3 for a 64-bit MMIO write (`size_log2 << 1 | write`).
const WRITE64: u64 = (3 << 1) | 1;

/// The scenarios of this file, in order.
pub(super) fn run_all() {
    probe();
    sweep();
}

/// Print `what` (its pieces), the two values, and fail with `code`.
fn fail_with(code: u64, what: &[&str], a: u64, b: u64) -> ! {
    print("TESTHOST:");
    for w in what {
        print(" ");
        print(w);
    }
    print(" ");
    print_hex(a);
    print(" ");
    print_hex(b);
    print("\n");
    print("TESTHOST: check failed\n");
    exit(code)
}

/// Print `what`, the two values, and fail with `code`.
fn fail(code: u64, what: &str, a: u64, b: u64) -> ! {
    fail_with(code, &[what], a, b)
}

/// [`check`] with the values that explain a failure.
fn ensure(ok: bool, code: u64, what: &str, a: u64, b: u64) {
    if !ok {
        fail(code, what, a, b)
    }
}

/// A guest exit the scenario did not expect.
fn unexpected(r: &[u64; 5], code: u64) -> ! {
    print("TESTHOST: unexpected exit ");
    for w in &r[1..] {
        print_hex(*w);
        print(" ");
    }
    print("\n");
    exit(code)
}

/// Run vCPU 0 of `vm`, giving a pending read `value`.
fn run(vm: u64, value: u64) -> [u64; 5] {
    super::hvc5(abi::VCPU_RUN, [vm, 0, value, 0])
}

// ---------------------------------------------------------------------------------------------
// 12x-13x: the guest's view of the CPU.

/// probe-guest.S's report addresses.
const ID_BASE: u64 = 0x0901_0000;
const RES_BASE: u64 = 0x0902_0000;
const BAD: u64 = 0x0903_0000;

/// probe-guest.S's results, by index (RES_BASE + 8 * index).
mod res {
    pub const ID_UNDEFS: usize = 0;
    pub const ATTEMPTS: usize = 1;
    pub const UNDEFS: usize = 2;
    pub const WHICH: usize = 3;
    pub const DBGBCR0: usize = 4;
    pub const DBGWVR0: usize = 7;
    pub const OSLSR: usize = 8;
    pub const MDSCR: usize = 9;
    pub const CNTP_CTL: usize = 10;
    pub const CNTP_TVAL: usize = 11;
    pub const LATE_UNDEFS: usize = 12;
    pub const DONE: usize = 13;
    pub const COUNT: usize = 14;
}

/// The hidden-feature probes of probe-guest.S's (b), in order: each must UNDEF in the guest.
const PROBES: [&str; 22] = [
    "RDVL (SVE)",
    "ZCR_EL1 read",
    "ZCR_EL1 write",
    "SMSTART (SME)",
    "SVCR",
    "SMCR_EL1",
    "TPIDR2_EL0",
    "SMPRI_EL1",
    "PACGA",
    "APIAKeyLo_EL1 read",
    "APIAKeyLo_EL1 write",
    "PMCR_EL0",
    "PMCCNTR_EL0",
    "LORC_EL1",
    "ERRIDR_EL1",
    "AMCR_EL0",
    "GCR_EL1",
    "TRCPRGCTLR (trace)",
    "PMSCR_EL1 (SPE)",
    "ACTLR_EL1",
    "S3_0_C15_C0_0 (IMPLEMENTATION DEFINED)",
    "ID_AA64PFR0_EL1 write",
];

/// The values probe-guest.S writes to ICC_SGI1R_EL1, ICC_SGI0R_EL1, ICC_ASGI1R_EL1, in that
/// order, with the register number exit 8 must name for each.
const SGIS: [(u64, u64); 3] = [(0x0055_003b_0d77_1234, 1), (0x0000_0000_0500_0003, 0), (0x0000_0001_0200_1001, 2)];

/// ESR ISS of a system-register access without Rt and direction (what exit 9 reports).
const fn sysreg_iss(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64) -> u64 {
    (op0 << 20) | (op2 << 17) | (op1 << 14) | (crn << 10) | (crm << 1)
}
const CNTP_TVAL: u64 = sysreg_iss(3, 3, 14, 2, 0);
const CNTP_CTL: u64 = sysreg_iss(3, 3, 14, 2, 1);
const CNTP_CVAL: u64 = sysreg_iss(3, 3, 14, 2, 2);
/// The EL1 physical-timer accesses of probe-guest.S's (e), in order: (register, write, value).
const TIMER: [(u64, u64, u64); 4] =
    [(CNTP_CTL, 1, 1), (CNTP_CTL, 0, 0), (CNTP_CVAL, 1, 0x0123_4567_89ab_cdef), (CNTP_TVAL, 0, 0)];
/// What the host answers the guest's two timer reads.
const CNTP_CTL_ANSWER: u64 = 0b101; // ENABLE, ISTATUS
const CNTP_TVAL_ANSWER: u64 = 0x7777;

/// ID_AA64DFR0_EL1 as every guest reads it: Armv8.0 debug (DebugVer 6), two breakpoints and
/// two watchpoints (BRPs = WRPs = 1), no OS double lock (DoubleLock, bits 39:36, = 0xf);
/// nothing else (no PMU, SPE, trace).
const DFR0_GUEST: u64 = 6 | (1 << 12) | (1 << 20) | (0xf << 36);
/// MIDR_EL1 of QEMU's `max` CPU (implementer 0, part 'Q'), where the hidden features exist.
const QEMU_MAX_MIDR: u64 = 0x000f_0510;

fn field(v: u64, shift: u32) -> u64 {
    (v >> shift) & 0xf
}

fn mask(shifts: &[u32]) -> u64 {
    shifts.iter().fold(0, |m, s| m | 0xf << s)
}

/// What KCore must do with one of the 56 ID registers.
enum IdRule {
    /// Field by field: `hidden` fields read 0, `kept` ones as the CPU has them, `own` ones are
    /// KCore's (checked apart); every other field reads 0 or as the CPU has it, never more.
    Fields { hidden: &'static [(u32, &'static str)], kept: &'static [u32], own: &'static [u32] },
    /// Exactly the CPU's value with only the `kept` fields; `hidden` name some that go.
    Only { kept: &'static [u32], hidden: &'static [(u32, &'static str)] },
    /// Exactly this value.
    Fixed(u64),
    /// Zero (`name` for the report when the CPU has something there).
    Zero(&'static str),
}

fn id_rule(crm: usize, op2: usize) -> IdRule {
    match (crm, op2) {
        // ID_AA64PFR0_EL1: EL0 (0) and EL1 (4) AArch64 only, CSV2 (56) at most 1 (no
        // SCXTNUM), set by KCore.
        (4, 0) => IdRule::Fields {
            hidden: &[(32, "SVE"), (28, "RAS"), (8, "EL2"), (12, "EL3"), (44, "AMU"), (40, "MPAM")],
            kept: &[16, 20, 24],
            own: &[0, 4, 56],
        },
        // ID_AA64PFR1_EL1: BT, SSBS.
        (4, 1) => IdRule::Only { kept: &[0, 4], hidden: &[(24, "SME"), (8, "MTE"), (32, "CSV2_frac")] },
        (4, 4) => IdRule::Zero("ZFR0 (SVE)"),
        (4, 5) => IdRule::Zero("SMFR0 (SME)"),
        (5, 0) => IdRule::Fixed(DFR0_GUEST),
        // ID_AA64ISAR0_EL1, ID_AA64MMFR2_EL1: never more than the CPU.
        (6, 0) | (7, 2) => IdRule::Fields { hidden: &[], kept: &[], own: &[] },
        // ID_AA64ISAR1_EL1: everything but pointer authentication and LS64.
        (6, 1) => IdRule::Fields {
            hidden: &[(4, "APA"), (8, "API"), (24, "GPA"), (28, "GPI"), (60, "LS64")],
            kept: &[0, 12, 16, 20, 32, 36, 40, 44, 48, 52, 56],
            own: &[],
        },
        (6, 2) => IdRule::Fields { hidden: &[(8, "GPA3"), (12, "APA3")], kept: &[], own: &[] },
        // ID_AA64MMFR0_EL1: PARange (0) capped at KCore's 48-bit IPA space.
        (7, 0) => IdRule::Fields { hidden: &[(56, "FGT"), (60, "ECV")], kept: &[], own: &[0] },
        (7, 1) => IdRule::Fields { hidden: &[(16, "LO"), (8, "VH"), (40, "HCX")], kept: &[], own: &[] },
        (7, 3) => IdRule::Zero("MMFR3"),
        (7, 4) => IdRule::Zero("MMFR4"),
        (1..=3, _) => IdRule::Zero("AArch32"),
        _ => IdRule::Zero("unnamed"),
    }
}

/// The CPU's own ID registers (the host's reads do not trap), by (CRm - 1) * 8 + op2.
fn host_id_regs() -> [u64; 56] {
    macro_rules! ids {
        ($($crm:literal: $($op2:literal)*;)*) => {{
            let mut r = [0u64; 56];
            $($({
                let v: u64;
                // SAFETY: reading an ID register has no side effects.
                unsafe {
                    asm!(concat!("mrs {}, S3_0_C0_C", $crm, "_", $op2), out(reg) v,
                        options(nomem, nostack, preserves_flags))
                };
                r[($crm - 1) * 8 + $op2] = v;
            })*)*
            r
        }};
    }
    ids! {
        1: 0 1 2 3 4 5 6 7;
        2: 0 1 2 3 4 5 6 7;
        3: 0 1 2 3 4 5 6 7;
        4: 0 1 2 3 4 5 6 7;
        5: 0 1 2 3 4 5 6 7;
        6: 0 1 2 3 4 5 6 7;
        7: 0 1 2 3 4 5 6 7;
    }
}

fn midr() -> u64 {
    let v: u64;
    // SAFETY: reading MIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, midr_el1", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// The features the CPU has that a guest does not see (for the log, and the proof on `max`).
struct Hidden {
    names: [&'static str; 32],
    n: usize,
}

impl Hidden {
    fn note(&mut self, name: &'static str) {
        if !self.has(name) && self.n < self.names.len() {
            self.names[self.n] = name;
            self.n += 1;
        }
    }
    fn has(&self, name: &str) -> bool {
        self.names[..self.n].contains(&name)
    }
}

/// Check the guest's ID register `i` (`g`) against the CPU's (`raw`), field by field; note
/// in `hidden` what the CPU has and the guest does not see.
fn check_id(i: usize, raw: u64, g: u64, hidden: &mut Hidden) {
    let (crm, op2) = (i / 8 + 1, i % 8);
    let bad = |code: u64, what: &str| -> ! {
        print("TESTHOST: ID register S3_0_C0_C");
        print_dec(crm as u64);
        print("_");
        print_dec(op2 as u64);
        print(": ");
        print(what);
        print(": CPU ");
        print_hex(raw);
        print(", guest ");
        print_hex(g);
        print("\n");
        exit(code)
    };
    match id_rule(crm, op2) {
        IdRule::Fields { hidden: gone, kept, own } => {
            let own = mask(own);
            for s in (0..64).step_by(4) {
                let gf = field(g, s);
                if own & (0xf << s) == 0 && gf != 0 && gf != field(raw, s) {
                    bad(125, "a field the CPU does not have");
                }
            }
            for &(s, name) in gone {
                if field(g, s) != 0 {
                    bad(126, name);
                }
                if field(raw, s) != 0 {
                    hidden.note(name);
                }
            }
            for &s in kept {
                if field(g, s) != field(raw, s) {
                    bad(127, "a field guests keep");
                }
            }
            if (crm, op2) == (4, 0) && (field(g, 0) != 1 || field(g, 4) != 1) {
                bad(126, "EL0 or EL1 not AArch64-only");
            }
            if (crm, op2) == (7, 0) && field(g, 0) != field(raw, 0).min(5) {
                bad(126, "PARange not capped at 48 bits");
            }
        }
        IdRule::Only { kept, hidden: gone } => {
            if g != raw & mask(kept) {
                bad(126, "not exactly the kept fields");
            }
            for &(s, name) in gone {
                if field(raw, s) != 0 {
                    hidden.note(name);
                }
            }
        }
        IdRule::Fixed(v) => {
            if g != v {
                bad(126, "not the fixed value");
            }
            if raw != v {
                hidden.note("DFR0 (PMU, SPE, trace, debug)");
            }
        }
        IdRule::Zero(name) => {
            if g != 0 {
                bad(126, name);
            }
            if raw != 0 {
                hidden.note(name);
            }
        }
    }
}

/// 12x-13x: probe-guest.S runs; see its header for (a) to (f).
fn probe() {
    let vm = load_prog(400, PROBE_IMG, PROBE_SIG, 120);
    let before = faults();
    let mut ids = [0u64; 56];
    let mut ids_seen = 0u64;
    let mut res = [0u64; res::COUNT];
    let mut res_seen = 0u32;
    let (mut sgis, mut nsgi) = ([(0u64, 0u64); 3], 0);
    let (mut timer, mut ntimer) = ([(0u64, 0u64, 0u64); 4], 0);
    let mut answer = 0;
    let mut off = false;
    for _ in 0..500 {
        let r = run(vm, answer);
        answer = 0;
        check(r[0] == 0, 121);
        match r[1] {
            1 if r[3] == WRITE64 && (ID_BASE..ID_BASE + 8 * 56).contains(&r[2]) => {
                let i = (r[2] - ID_BASE) / 8;
                ids[i as usize] = r[4];
                ids_seen |= 1 << i;
            }
            1 if r[3] == WRITE64 && (RES_BASE..RES_BASE + 8 * res::COUNT as u64).contains(&r[2]) => {
                let k = (r[2] - RES_BASE) / 8;
                res[k as usize] = r[4];
                res_seen |= 1 << k;
            }
            1 if r[3] == WRITE64 && (BAD..BAD + 24).contains(&r[2]) => {
                fail(123, "the guest took an exception other than UNDEF: address, ESR/ELR", r[2], r[4])
            }
            8 => {
                if nsgi < sgis.len() {
                    sgis[nsgi] = (r[2], r[3]);
                }
                nsgi += 1;
            }
            9 => {
                if ntimer < timer.len() {
                    timer[ntimer] = (r[2], r[3], r[4]);
                }
                ntimer += 1;
                if r[3] == 0 {
                    answer = match r[2] {
                        CNTP_CTL => CNTP_CTL_ANSWER,
                        CNTP_TVAL => CNTP_TVAL_ANSWER,
                        _ => 0,
                    };
                }
            }
            5 => {
                off = true;
                break;
            }
            _ => unexpected(&r, 122),
        }
    }
    ensure(off, 121, "the probe guest did not power off", 0, 0);
    ensure(faults() == before, 121, "the host took exceptions", faults() - before, 0);
    ensure(res_seen == (1 << res::COUNT) - 1 && res[res::DONE] == 0x600d, 124, "results missing", res_seen as u64, 0);

    // (a) ID registers, field by field against the CPU's own.
    ensure(ids_seen == u64::MAX >> 8, 129, "ID registers not reported", ids_seen, 0);
    ensure(res[res::ID_UNDEFS] == 0, 129, "ID register reads UNDEFed", res[res::ID_UNDEFS], 0);
    let raw = host_id_regs();
    let mut hidden = Hidden { names: [""; 32], n: 0 };
    for i in 0..56 {
        check_id(i, raw[i], ids[i], &mut hidden);
    }
    // KCore's own fields of ID_AA64PFR0_EL1: EL0 and EL1 AArch64 only; CSV2 at most 1, so the
    // SCXTNUM_ELx registers (trapped, not switched) are not promised.
    let pfr0 = ids[3 * 8];
    ensure(pfr0 & 0xff == 0x11 && (pfr0 >> 56) & 0xf <= 1, 127, "ID_AA64PFR0_EL1 EL0/EL1/CSV2", pfr0, 0);
    print("TESTHOST: the CPU has, the guest does not see:");
    for name in &hidden.names[..hidden.n] {
        print(" ");
        print(name);
    }
    print("\n");
    // On QEMU's `max` the hidden features really exist, so the test proves they are hidden.
    if midr() == QEMU_MAX_MIDR {
        for name in ["SVE", "SME", "ZFR0 (SVE)", "SMFR0 (SME)", "FGT", "LO", "VH", "HCX", "EL2", "RAS"] {
            if !hidden.has(name) {
                print("TESTHOST: on max, not there to hide: ");
                print(name);
                print("\n");
                exit(128);
            }
        }
        let pauth = ["APA", "API", "GPA", "GPI", "APA3", "GPA3"].iter().any(|p| hidden.has(p));
        ensure(pauth, 128, "on max, pointer authentication was not there to hide", hidden.n as u64, 0);
        print(
            "TESTHOST: (QEMU max: SVE, SME, pointer authentication, FGT, LOR, VHE, HCX, EL2 and RAS exist and are hidden)\n",
        );
    }

    // (b) Every hidden-feature probe UNDEFed, and nothing reached the host.
    let all = (1u64 << PROBES.len()) - 1;
    ensure(res[res::ATTEMPTS] == PROBES.len() as u64, 130, "probes attempted", res[res::ATTEMPTS], 0);
    if res[res::UNDEFS] != PROBES.len() as u64 || res[res::WHICH] != all {
        for (i, name) in PROBES.iter().enumerate() {
            if res[res::WHICH] & (1 << i) == 0 {
                print("TESTHOST: no UNDEF for ");
                print(name);
                print("\n");
            }
        }
        fail(131, "UNDEFs, which", res[res::UNDEFS], res[res::WHICH]);
    }

    // (c) Debug registers: read as zero after writes; the OS lock reads unlocked; MDSCR_EL1
    // keeps what is written except MDE and KDE.
    for (k, v) in res[res::DBGBCR0..=res::DBGWVR0].iter().enumerate() {
        ensure(*v == 0, 132, "DBGBCR0, DBGBVR0, DBGWCR0, DBGWVR0 (k) read back", k as u64, *v);
    }
    ensure(res[res::OSLSR] == 0b1000, 133, "OSLSR_EL1", res[res::OSLSR], 0);
    ensure(res[res::MDSCR] == 1 << 12, 134, "MDSCR_EL1 after MDE|KDE|TDCC", res[res::MDSCR], 0);

    // (d) SGIs: one exit 8 each, with the value and the register.
    ensure(nsgi == SGIS.len(), 135, "SGI exits", nsgi as u64, 0);
    for (seen, want) in sgis.iter().zip(SGIS.iter()) {
        ensure(seen == want, 135, "SGI exit (value, register)", seen.0, seen.1);
    }

    // (e) The EL1 physical timer: exit 9 per access, the guest got the host's answers.
    ensure(ntimer == TIMER.len(), 136, "timer exits", ntimer as u64, 0);
    for (seen, want) in timer.iter().zip(TIMER.iter()) {
        ensure(seen == want, 136, "timer exit (ISS, write)", seen.0, seen.1);
    }
    ensure(res[res::CNTP_CTL] == CNTP_CTL_ANSWER, 137, "CNTP_CTL_EL0 read", res[res::CNTP_CTL], 0);
    ensure(res[res::CNTP_TVAL] == CNTP_TVAL_ANSWER, 137, "CNTP_TVAL_EL0 read", res[res::CNTP_TVAL], 0);

    // (f) Nothing from (c) to (f) UNDEFed: set/way maintenance is ignored.
    ensure(res[res::LATE_UNDEFS] == 0, 138, "UNDEFs in (c)..(f)", res[res::LATE_UNDEFS], 0);
    print("TESTHOST: probe guest: 56 ID registers sanitised, ");
    print_dec(PROBES.len() as u64);
    print(" hidden-feature probes UNDEFed\n");
    check(status(hvc(abi::DESTROY_VM, [vm, 0, 0, 0])) == 0, 139);
}

// ---------------------------------------------------------------------------------------------
// 14x-15x: the register sweep.

/// sweep-guest.S's report addresses.
const A_BASE: u64 = 0x0902_0000;
const B_BASE: u64 = 0x0903_0000;
const SWEEP_OUT: u64 = 0x8000;
const C_BASE: u64 = 0x0905_0000;
/// Words reported at each: SP, the EL1 registers, FPCR, FPSR, q0..q31 (A); the EL1
/// registers, FPCR, FPSR (B); three mismatch masks, the EL1 registers, FPCR, FPSR (C).
const A_WORDS: usize = 1 + EL1 + 2 + 64;
const B_WORDS: usize = EL1 + 2;
const C_WORDS: usize = 3 + EL1 + 2;

/// The high half of every host secret ("HoSt") and of every guest secret ("GuEs").
const HOST_TAG: u64 = 0x486f_5374;
const GUEST_TAG: u64 = 0x4775_4573;
/// The host's x<n> = HX + n across each VCPU_RUN; its SP and q<n> (both halves = HQ + n).
const HX: u64 = HOST_TAG << 32 | 0x5800_0000;
const HQ: u64 = HOST_TAG << 32 | 0x5100_0000;
const HOST_SP: u64 = HOST_TAG << 32 | 0x5350_0000;
const HOST_FPCR: u64 = 0x07c0_0000; // AHP, DN, FZ, RMode = 11
const HOST_FPSR: u64 = 0x0800_009f; // QC, IDC, IXC, UFC, OFC, DZC, IOC

/// The EL1 registers of the sweep, in sweep-guest.S's order. The host holds its values in
/// the first [`STEADY`] for the whole run; ELR_EL1, SPSR_EL1, VBAR_EL1 only across each HVC.
macro_rules! el1_regs {
    ($($k:literal $name:literal,)*) => {
        const EL1_NAMES: [&str; EL1] = [$($name,)*];

        /// The host's own EL1 registers of the sweep.
        fn read_el1() -> [u64; EL1] {
            [$({
                let v: u64;
                // SAFETY: reading an EL1 register of the host's own has no side effects.
                unsafe { asm!(concat!("mrs {}, ", $name), out(reg) v, options(nomem, nostack, preserves_flags)) };
                v
            },)*]
        }

        /// Write the host's EL1 register `k` (< [`STEADY`]).
        fn write_el1(k: usize, v: u64) {
            match k {
                $($k if $k < STEADY => {
                    // SAFETY: the test host runs with the MMU off and takes no exceptions while
                    // it holds sweep values here; none of these registers changes how it runs
                    // (CPACR_EL1 always keeps FPEN; MDSCR_EL1 gets no debug enables).
                    unsafe { asm!(concat!("msr ", $name, ", {}"), "isb", in(reg) v, options(nostack)) }
                })*
                _ => {}
            }
        }
    };
}
const EL1: usize = 24;
const STEADY: usize = 21;
el1_regs! {
    0 "tpidr_el0", 1 "tpidr_el1", 2 "tpidrro_el0", 3 "contextidr_el1", 4 "afsr0_el1", 5 "afsr1_el1",
    6 "far_el1", 7 "par_el1", 8 "mair_el1", 9 "amair_el1", 10 "cntkctl_el1", 11 "cntv_cval_el0",
    12 "sp_el0", 13 "esr_el1", 14 "mdscr_el1", 15 "ttbr0_el1", 16 "ttbr1_el1", 17 "tcr_el1",
    18 "csselr_el1", 19 "cntv_ctl_el0", 20 "cpacr_el1", 21 "elr_el1", 22 "spsr_el1", 23 "vbar_el1",
}
const MDSCR: usize = 14;
const CSSELR: usize = 18;
const CNTV_CTL: usize = 19;
const CPACR: usize = 20;
const ELR: usize = 21;
const SPSR: usize = 22;
const VBAR: usize = 23;
/// CNTV_CTL_EL0.ISTATUS: status, not state.
const ISTATUS: u64 = 0b100;
/// The sweep's EL1 registers that hold all 64 bits: there a guest secret must read back
/// whole (so the sweep is not vacuous).
const FULL64: [usize; 12] = [0, 1, 2, 6, 7, 8, 11, 12, 15, 16, 21, 23];

/// What the host puts in its EL1 register `k` while the sweep guest runs.
fn host_el1_value(k: usize, sve: bool) -> u64 {
    match k {
        MDSCR => 1 << 12,                                 // TDCC: no debug enables for the host
        CSSELR => 0b0010,                                 // level 2 data cache
        CNTV_CTL => 0b011,                                // ENABLE, IMASK: never interrupts
        CPACR => 3 << 20 | if sve { 3 << 16 } else { 0 }, // FPEN (ZEN)
        VBAR => HOST_TAG << 32 | 0x5300_0000 | (k as u64) << 12,
        _ => HOST_TAG << 32 | 0x5300_005a | (k as u64) << 8,
    }
}

/// The host's registers around one VCPU_RUN ([`run_swept`]); offsets are fixed in its asm.
#[repr(C, align(16))]
struct RunRegs {
    /// x0..x30 just after the HVC.
    x: [u64; 31],
    /// SP, ELR_EL1, SPSR_EL1, VBAR_EL1 just after the HVC.
    after: [u64; 4],
    /// The test host's own x18..x30, SP, VBAR_EL1, ELR_EL1, SPSR_EL1, put back afterwards.
    saved: [u64; 17],
    /// ELR_EL1, SPSR_EL1, VBAR_EL1 and SP across the HVC.
    secret: [u64; 4],
}
const _: () = assert!(core::mem::offset_of!(RunRegs, after) == 248);
const _: () = assert!(core::mem::offset_of!(RunRegs, saved) == 280);
const _: () = assert!(core::mem::offset_of!(RunRegs, secret) == 416);

/// VCPU_RUN of vCPU 0 of `vm` with x3 (the pending-read value, unused here), x7, x9..x30, SP,
/// ELR_EL1, SPSR_EL1 and VBAR_EL1 holding host secrets (x4..x6, VCPU_RUN's other argument
/// registers, are zero); `regs` gets all of them as the HVC left them, and the host's own are
/// put back.
fn run_swept(vm: u64, regs: &mut RunRegs) {
    // SAFETY: HVC #0 enters KCore. Around it the asm saves and restores everything of the
    // test host's it changes: x18..x30, SP, VBAR_EL1, ELR_EL1 and SPSR_EL1 (in `regs`, which
    // x8 points to throughout and which is all the memory it writes); x0..x7, x9..x17 are
    // declared clobbered. No exception is expected while SP and VBAR_EL1 hold the secrets
    // (interrupts stay masked at EL1 and KCore injects nothing into the host on this path).
    unsafe {
        asm!(
            "stp x18, x19, [x8, #280]",
            "stp x20, x21, [x8, #296]",
            "stp x22, x23, [x8, #312]",
            "stp x24, x25, [x8, #328]",
            "stp x26, x27, [x8, #344]",
            "stp x28, x29, [x8, #360]",
            "str x30, [x8, #376]",
            "mov x9, sp",
            "str x9, [x8, #384]",
            "mrs x9, vbar_el1",
            "str x9, [x8, #392]",
            "mrs x9, elr_el1",
            "str x9, [x8, #400]",
            "mrs x9, spsr_el1",
            "str x9, [x8, #408]",
            "ldr x9, [x8, #416]",
            "msr elr_el1, x9",
            "ldr x9, [x8, #424]",
            "msr spsr_el1, x9",
            "ldr x9, [x8, #432]",
            "msr vbar_el1, x9",
            "ldr x9, [x8, #440]",
            "mov sp, x9",
            "isb",
            "mov x4, xzr",
            "mov x5, xzr",
            "mov x6, xzr",
            "add x7, x16, #7",
            "add x9, x16, #9",
            "add x10, x16, #10",
            "add x11, x16, #11",
            "add x12, x16, #12",
            "add x13, x16, #13",
            "add x14, x16, #14",
            "add x15, x16, #15",
            "add x17, x16, #17",
            "add x18, x16, #18",
            "add x19, x16, #19",
            "add x20, x16, #20",
            "add x21, x16, #21",
            "add x22, x16, #22",
            "add x23, x16, #23",
            "add x24, x16, #24",
            "add x25, x16, #25",
            "add x26, x16, #26",
            "add x27, x16, #27",
            "add x28, x16, #28",
            "add x29, x16, #29",
            "add x30, x16, #30",
            "add x16, x16, #16",
            "hvc #0",
            "stp x0, x1, [x8, #0]",
            "stp x2, x3, [x8, #16]",
            "stp x4, x5, [x8, #32]",
            "stp x6, x7, [x8, #48]",
            "stp x8, x9, [x8, #64]",
            "stp x10, x11, [x8, #80]",
            "stp x12, x13, [x8, #96]",
            "stp x14, x15, [x8, #112]",
            "stp x16, x17, [x8, #128]",
            "stp x18, x19, [x8, #144]",
            "stp x20, x21, [x8, #160]",
            "stp x22, x23, [x8, #176]",
            "stp x24, x25, [x8, #192]",
            "stp x26, x27, [x8, #208]",
            "stp x28, x29, [x8, #224]",
            "str x30, [x8, #240]",
            "mov x9, sp",
            "str x9, [x8, #248]",
            "mrs x9, elr_el1",
            "str x9, [x8, #256]",
            "mrs x9, spsr_el1",
            "str x9, [x8, #264]",
            "mrs x9, vbar_el1",
            "str x9, [x8, #272]",
            "ldr x9, [x8, #384]",
            "mov sp, x9",
            "ldr x9, [x8, #392]",
            "msr vbar_el1, x9",
            "ldr x9, [x8, #400]",
            "msr elr_el1, x9",
            "ldr x9, [x8, #408]",
            "msr spsr_el1, x9",
            "isb",
            "ldp x18, x19, [x8, #280]",
            "ldp x20, x21, [x8, #296]",
            "ldp x22, x23, [x8, #312]",
            "ldp x24, x25, [x8, #328]",
            "ldp x26, x27, [x8, #344]",
            "ldp x28, x29, [x8, #360]",
            "ldr x30, [x8, #376]",
            inout("x0") abi::VCPU_RUN as u64 => _,
            inout("x1") vm => _,
            inout("x2") 0u64 => _,
            inout("x3") HX + 3 => _,
            in("x8") regs as *mut RunRegs,
            inout("x16") HX => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x9") _, out("x10") _,
            out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x17") _,
            options(nostack)
        )
    };
}

/// What ELR_EL1, SPSR_EL1 and VBAR_EL1 read back when set to `v` (without keeping it).
fn measure_run_regs(v: [u64; 3]) -> [u64; 3] {
    let (e, s, b): (u64, u64, u64);
    // SAFETY: each register gets its old value back before the asm ends; nothing in between
    // can take an exception (no memory accesses, interrupts masked).
    unsafe {
        asm!(
            "mrs {o}, elr_el1", "msr elr_el1, {e}", "isb", "mrs {e}, elr_el1", "msr elr_el1, {o}",
            "mrs {o}, spsr_el1", "msr spsr_el1, {s}", "isb", "mrs {s}, spsr_el1", "msr spsr_el1, {o}",
            "mrs {o}, vbar_el1", "msr vbar_el1, {b}", "isb", "mrs {b}, vbar_el1", "msr vbar_el1, {o}",
            "isb",
            e = inout(reg) v[0] => e, s = inout(reg) v[1] => s, b = inout(reg) v[2] => b, o = out(reg) _,
            options(nomem, nostack)
        )
    };
    [e, s, b]
}

/// Does the host have SVE (ID_AA64PFR0_EL1.SVE)? Then its Z and P registers are swept too.
fn host_sve() -> bool {
    let v: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { asm!("mrs {}, id_aa64pfr0_el1", out(reg) v, options(nomem, nostack, preserves_flags)) };
    field(v, 32) != 0
}

/// Calls `$m!(n)` for n in 0..32.
macro_rules! each_vreg {
    ($m:ident) => {
        $m!(0);
        $m!(1);
        $m!(2);
        $m!(3);
        $m!(4);
        $m!(5);
        $m!(6);
        $m!(7);
        $m!(8);
        $m!(9);
        $m!(10);
        $m!(11);
        $m!(12);
        $m!(13);
        $m!(14);
        $m!(15);
        $m!(16);
        $m!(17);
        $m!(18);
        $m!(19);
        $m!(20);
        $m!(21);
        $m!(22);
        $m!(23);
        $m!(24);
        $m!(25);
        $m!(26);
        $m!(27);
        $m!(28);
        $m!(29);
        $m!(30);
        $m!(31);
    };
}

/// Load the host's FP/SIMD secrets: q<n> = (HQ + n, HQ + n), FPCR, FPSR. With SVE, each
/// Z<n> holds HQ + n in every 64-bit element and P<n> a pattern (`ptrue` of element size
/// 1 << (n % 4) bytes), at the largest vector length.
fn host_fp_fill(sve: bool) {
    if sve {
        // SAFETY: ZCR_EL1.LEN = 0xf: the largest vector length EL2 allows the host (SVE
        // enabled for EL1 by CPACR_EL1.ZEN, set before this).
        unsafe { asm!("msr S3_0_C1_C2_0, {}", "isb", in(reg) 0xfu64, options(nostack)) };
        macro_rules! z {
            ($n:literal) => {
                // SAFETY: SVE is enabled at EL1; only Z<n> changes, and nothing else of the
                // test host uses the FP/SIMD or SVE registers.
                unsafe {
                    asm!(".arch_extension sve", concat!("dup z", $n, ".d, {}"), in(reg) HQ + $n,
                        options(nomem, nostack, preserves_flags))
                }
            };
        }
        each_vreg!(z);
        // SAFETY: as above, for P0..P15.
        unsafe {
            asm!(
                ".arch_extension sve",
                "ptrue p0.b",
                "ptrue p1.h",
                "ptrue p2.s",
                "ptrue p3.d",
                "ptrue p4.b",
                "ptrue p5.h",
                "ptrue p6.s",
                "ptrue p7.d",
                "ptrue p8.b",
                "ptrue p9.h",
                "ptrue p10.s",
                "ptrue p11.d",
                "ptrue p12.b",
                "ptrue p13.h",
                "ptrue p14.s",
                "ptrue p15.d",
                options(nomem, nostack, preserves_flags)
            )
        };
    } else {
        macro_rules! q {
            ($n:literal) => {
                // SAFETY: FP/SIMD is enabled at EL1; only q<n> changes.
                unsafe {
                    asm!(".arch_extension fp", ".arch_extension simd",
                        concat!("fmov d", $n, ", {v}"), concat!("mov v", $n, ".d[1], {v}"),
                        v = in(reg) HQ + $n, options(nomem, nostack, preserves_flags))
                }
            };
        }
        each_vreg!(q);
    }
    // SAFETY: FPCR and FPSR of the host's own (nothing of the test host computes in FP).
    unsafe {
        asm!(".arch_extension fp", "msr fpcr, {c}", "msr fpsr, {s}", c = in(reg) HOST_FPCR, s = in(reg) HOST_FPSR,
            options(nomem, nostack))
    };
}

/// The host's q0..q31 (low, high), FPCR and FPSR.
fn host_fp_read() -> ([[u64; 2]; 32], u64, u64) {
    let mut q = [[0u64; 2]; 32];
    macro_rules! q {
        ($n:literal) => {
            // SAFETY: reading FP/SIMD registers (enabled at EL1) has no side effects.
            unsafe {
                asm!(".arch_extension fp", ".arch_extension simd",
                    concat!("fmov {a}, d", $n), concat!("mov {b}, v", $n, ".d[1]"),
                    a = out(reg) q[$n][0], b = out(reg) q[$n][1], options(nomem, nostack, preserves_flags))
            }
        };
    }
    each_vreg!(q);
    let (c, s): (u64, u64);
    // SAFETY: as above.
    unsafe {
        asm!(".arch_extension fp", "mrs {c}, fpcr", "mrs {s}, fpsr", c = out(reg) c, s = out(reg) s,
            options(nomem, nostack, preserves_flags))
    };
    (q, c, s)
}

/// With SVE: are the host's Z registers whole (every element HQ + n, not only the low 128
/// bits), and are its P registers the patterns [`host_fp_fill`] set? (z_whole, p_ok)
fn host_sve_intact() -> (bool, bool) {
    let mut buf = [0u64; 32]; // up to 2048 bits
    let vl: u64;
    // SAFETY: RDVL reads the vector length (SVE enabled at EL1).
    unsafe { asm!(".arch_extension sve", "rdvl {}, #1", out(reg) vl, options(nomem, nostack, preserves_flags)) };
    let words = (vl as usize / 8).min(buf.len());
    let mut z_whole = true;
    macro_rules! z {
        ($n:literal) => {
            // SAFETY: stores Z<n> (VL bytes, at most 256) into `buf`.
            unsafe {
                asm!(".arch_extension sve", concat!("str z", $n, ", [{}]"), in(reg) buf.as_mut_ptr(),
                    options(nostack, preserves_flags))
            };
            z_whole &= buf[..words].iter().all(|w| *w == HQ + $n);
        };
    }
    each_vreg!(z);
    let mut p_ok = true;
    macro_rules! p {
        ($n:literal) => {
            buf[..4].fill(0);
            // SAFETY: stores P<n> (VL / 8 bytes, at most 32) into `buf`.
            unsafe {
                asm!(".arch_extension sve", concat!("str p", $n, ", [{}]"), in(reg) buf.as_mut_ptr(),
                    options(nostack, preserves_flags))
            };
            // ptrue of element size 1 << (n % 4) bytes: one bit per element.
            let pattern = [u64::MAX, 0x5555_5555_5555_5555, 0x1111_1111_1111_1111, 0x0101_0101_0101_0101][$n % 4];
            let bits = vl as usize; // a predicate bit per vector byte
            for (i, w) in buf[..bits.div_ceil(64)].iter().enumerate() {
                let valid = if (i + 1) * 64 <= bits { u64::MAX } else { (1u64 << (bits % 64)) - 1 };
                p_ok &= *w == pattern & valid;
            }
        };
    }
    p!(0);
    p!(1);
    p!(2);
    p!(3);
    p!(4);
    p!(5);
    p!(6);
    p!(7);
    p!(8);
    p!(9);
    p!(10);
    p!(11);
    p!(12);
    p!(13);
    p!(14);
    p!(15);
    (z_whole, p_ok)
}

/// A small set of values to look for.
struct Values {
    v: [u64; 160],
    n: usize,
}

impl Values {
    const fn new() -> Self {
        Values { v: [0; 160], n: 0 }
    }
    /// Remember `v` if it is distinctive (a value this large does not turn up by chance).
    fn add(&mut self, v: u64) {
        if v >= 0x1_0000 && self.n < self.v.len() {
            self.v[self.n] = v;
            self.n += 1;
        }
    }
    fn has(&self, v: u64) -> bool {
        self.v[..self.n].contains(&v)
    }
}

/// Does `v`, something the guest read, carry host state? `own` is the host's value of the
/// same register; `host` every distinctive host value.
fn leaked_to_guest(v: u64, own: u64, host: &Values) -> bool {
    v != 0 && (v >> 32 == HOST_TAG || (own != 0 && v == own) || host.has(v))
}

/// Does `v`, something the host holds, carry guest state? `guest`: the guest's secrets.
fn leaked_to_host(v: u64, guest: &Values) -> bool {
    v >> 32 == GUEST_TAG || guest.has(v)
}

/// 14x-15x: sweep-guest.S runs with the host's registers full of host secrets; see its
/// header.
fn sweep() {
    let vm = load_prog(430, SWEEP_IMG, SWEEP_SIG, 140);
    let sve = host_sve();
    let before = faults();
    let original = read_el1();
    for k in 0..STEADY {
        write_el1(k, host_el1_value(k, sve));
    }
    let mut host = read_el1();
    for (k, v) in host.iter_mut().enumerate().skip(STEADY) {
        *v = host_el1_value(k, sve);
    }
    let per_run = measure_run_regs([host[ELR], host[SPSR], host[VBAR]]);
    host_fp_fill(sve);
    if sve {
        // The check below can tell: right now the Z and P registers are whole.
        check(host_sve_intact() == (true, true), 147);
    }
    let (host_q, host_fpcr, host_fpsr) = host_fp_read();
    for (n, q) in host_q.iter().enumerate() {
        ensure(*q == [HQ + n as u64; 2], 146, "host q register not set", n as u64, q[0]);
    }
    let mut regs =
        RunRegs { x: [0; 31], after: [0; 4], saved: [0; 17], secret: [host[ELR], host[SPSR], host[VBAR], HOST_SP] };
    // Everything of the host's a guest must never see.
    let mut host_values = Values::new();
    for (k, v) in host.iter().enumerate() {
        host_values.add(if k < STEADY { *v } else { per_run[k - STEADY] });
    }
    for v in [HOST_SP, host_fpcr, host_fpsr, &regs as *const RunRegs as u64] {
        host_values.add(v);
    }
    for n in [3].into_iter().chain(7..31) {
        host_values.add(HX + n);
    }
    for n in 0..32 {
        host_values.add(HQ + n);
    }

    let mut entry_x = [0u64; 31];
    let (mut a, mut b, mut c) = ([0u64; A_WORDS], [0u64; B_WORDS], [0u64; C_WORDS]);
    let (mut seen_x, mut seen_a, mut seen_b, mut seen_c) = (0u64, 0u128, 0u64, 0u64);
    let mut guest_values = Values::new();
    let (mut sweep_outs, mut off, mut z_lost) = (0, false, false);
    for _ in 0..400 {
        run_swept(vm, &mut regs);
        let r = [regs.x[0], regs.x[1], regs.x[2], regs.x[3], regs.x[4]];
        ensure(r[0] == 0, 141, "VCPU_RUN", r[0], r[1]);

        // The host's own registers are exactly as it left them: nothing of the guest's.
        for n in 5..31 {
            let want = match n {
                5 | 6 => 0,
                8 => &regs as *const RunRegs as u64,
                _ => HX + n as u64,
            };
            ensure(regs.x[n] == want, 143, "host x register changed (n, value)", n as u64, regs.x[n]);
        }
        ensure(regs.after[0] == HOST_SP, 143, "host SP changed", regs.after[0], 0);
        for (i, k) in (STEADY..EL1).enumerate() {
            ensure(
                regs.after[1 + i] == per_run[i],
                143,
                "host ELR/SPSR/VBAR changed (k, value)",
                k as u64,
                regs.after[1 + i],
            );
        }
        for n in 1..4 {
            ensure(
                !leaked_to_host(regs.x[n], &guest_values),
                144,
                "guest value in the exit (n, value)",
                n as u64,
                regs.x[n],
            );
        }
        let now = read_el1();
        for k in 0..STEADY {
            let m = if k == CNTV_CTL { !ISTATUS } else { u64::MAX };
            if now[k] & m != host[k] & m {
                fail_with(145, &["host", EL1_NAMES[k], "changed (was, is)"], host[k], now[k]);
            }
        }
        let (q, fpcr, fpsr) = host_fp_read();
        for n in 0..32 {
            ensure(q[n] == host_q[n], 146, "host q register changed (n, low)", n as u64, q[n][0]);
        }
        ensure(fpcr == host_fpcr && fpsr == host_fpsr, 146, "host FPCR, FPSR changed", fpcr, fpsr);
        if sve {
            let (z_whole, p_ok) = host_sve_intact();
            check(p_ok, 147);
            z_lost |= !z_whole;
        }

        match r[1] {
            1 if r[3] == WRITE64 && r[2] < 8 * 31 && r[2].is_multiple_of(8) => {
                entry_x[r[2] as usize / 8] = r[4];
                seen_x |= 1 << (r[2] / 8);
            }
            1 if r[3] == WRITE64 && (A_BASE..A_BASE + 8 * A_WORDS as u64).contains(&r[2]) => {
                let k = (r[2] - A_BASE) / 8;
                a[k as usize] = r[4];
                seen_a |= 1 << k;
            }
            1 if r[3] == WRITE64 && (B_BASE..B_BASE + 8 * B_WORDS as u64).contains(&r[2]) => {
                let k = (r[2] - B_BASE) / 8;
                b[k as usize] = r[4];
                seen_b |= 1 << k;
                // The guest's secret as it holds it: it must not reach the host from now on.
                guest_values.add(r[4]);
            }
            1 if r[3] == WRITE64 && r[2] == SWEEP_OUT => {
                // Every register of the guest's holds a guest secret right now.
                ensure(r[4] == 0, 144, "sweep-out value", r[4], 0);
                sweep_outs += 1;
                for n in 5..31 {
                    ensure(
                        !leaked_to_host(regs.x[n], &guest_values),
                        156,
                        "guest value in host x (n, value)",
                        n as u64,
                        regs.x[n],
                    );
                }
                for v in now.iter().chain(regs.after.iter()).chain([fpcr, fpsr].iter()) {
                    ensure(!leaked_to_host(*v, &guest_values), 156, "guest value in a host register", *v, 0);
                }
                for w in q.iter().flatten() {
                    ensure(!leaked_to_host(*w, &guest_values), 156, "guest value in a host q register", *w, 0);
                }
            }
            1 if r[3] == WRITE64 && (C_BASE..C_BASE + 8 * C_WORDS as u64).contains(&r[2]) => {
                let k = (r[2] - C_BASE) / 8;
                c[k as usize] = r[4];
                seen_c |= 1 << k;
            }
            5 => {
                off = true;
                break;
            }
            _ => unexpected(&r, 142),
        }
    }

    // The host's own state back (FPCR and FPSR first: the original CPACR_EL1 may trap them).
    // SAFETY: FPCR and FPSR back to their reset values (the test host computes nothing in FP).
    unsafe { asm!(".arch_extension fp", "msr fpcr, xzr", "msr fpsr, xzr", options(nomem, nostack)) };
    for (k, v) in original.iter().enumerate().take(STEADY) {
        write_el1(k, *v);
    }
    ensure(off, 141, "the sweep guest did not power off", 0, 0);
    ensure(faults() == before, 159, "the host took exceptions", faults() - before, 0);
    ensure(seen_x == (1 << 31) - 1 && seen_a == (1 << A_WORDS) - 1, 152, "A reports missing", seen_x, seen_a as u64);
    ensure(seen_b == (1 << B_WORDS) - 1 && seen_c == (1 << C_WORDS) - 1, 152, "B/C reports missing", seen_b, seen_c);
    ensure(sweep_outs == 1, 152, "sweep-out exits", sweep_outs, 0);

    // A: what the guest found at entry is none of the host's.
    for (n, v) in entry_x.iter().enumerate() {
        ensure(!leaked_to_guest(*v, 0, &host_values), 148, "host value in guest x at entry (n, value)", n as u64, *v);
    }
    ensure(!leaked_to_guest(a[0], HOST_SP, &host_values), 151, "host value in guest SP at entry", a[0], 0);
    for k in 0..EL1 {
        let own = if k < STEADY { host[k] } else { per_run[k - STEADY] };
        let m = if k == CNTV_CTL { !ISTATUS } else { u64::MAX };
        if leaked_to_guest(a[1 + k] & m, own & m, &host_values) {
            fail_with(149, &["guest", EL1_NAMES[k], "at entry holds the host's (host, guest)"], own, a[1 + k]);
        }
    }
    ensure(!leaked_to_guest(a[1 + EL1], host_fpcr, &host_values), 150, "host FPCR in the guest", a[1 + EL1], 0);
    ensure(!leaked_to_guest(a[2 + EL1], host_fpsr, &host_values), 150, "host FPSR in the guest", a[2 + EL1], 0);
    for (i, w) in a[3 + EL1..].iter().enumerate() {
        ensure(
            !leaked_to_guest(*w, HQ + i as u64 / 2, &host_values),
            150,
            "host value in guest q (word, value)",
            i as u64,
            *w,
        );
    }

    // B: the guest's secrets really were in its registers (the sweep is not vacuous).
    for k in FULL64 {
        ensure(b[k] >> 32 == GUEST_TAG, 158, "guest secret did not stick (k, value)", k as u64, b[k]);
    }
    // C: and they all survived the exit to the host.
    ensure(c[0] == 0, 154, "guest x registers changed across the exit (mask)", c[0], 0);
    ensure(c[1] == 0 && c[2] == 0, 155, "guest SP, q registers changed across the exit (mask)", c[1], c[2]);
    for k in 0..B_WORDS {
        let m = if k == CNTV_CTL { !ISTATUS } else { u64::MAX };
        if c[3 + k] & m != b[k] & m {
            let name = if k < EL1 { EL1_NAMES[k] } else { "FPCR/FPSR" };
            fail_with(153, &["guest", name, "changed across the exit (was, is)"], b[k], c[3 + k]);
        }
    }
    print("TESTHOST: register sweep: nothing of the host's in the guest, nothing of the guest's in the host");
    if sve {
        print(" (SVE Z/P swept too)");
    }
    print("\n");
    if z_lost {
        print("TESTHOST: NOTE: the host's SVE Z registers above bit 127 did not survive VCPU_RUN\n");
    }
    check(status(hvc(abi::DESTROY_VM, [vm, 0, 0, 0])) == 0, 157);
}
