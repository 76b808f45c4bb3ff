// 17x-19x: a non-protected VM. Its RAM stays the test host's, lent into its stage-2: the
// host reads and writes it while the guest runs, sets the guest's registers before the first
// run and reads them at exits, declares which guest addresses are RAM, and takes pages back.
// What must stay refused stays refused: a lent page cannot be donated or lent twice, a
// protected VM's registers stay KCore's, PSTATE cannot name EL2.

use super::{LOAD_IPA, check, faults, fill, hvc, hvc5, page, pfn, read, root_pages, status, write};
use kcore::abi;

const NP_IMG: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/np-guest-prog.img"));

/// GET/SET_VCPU_REG numbers (docs/ABI.md).
const REG_X0: u64 = 0;
const REG_X9: u64 = 9;
const REG_PC: u64 = 32;
const REG_PSTATE: u64 = 33;

/// The guest's RAM region and the pages of it the test uses.
const RAM_SIZE: u64 = 16 << 20;
const DATA_IPA: u64 = LOAD_IPA + 0x10_0000;
const FAULT_IPA: u64 = LOAD_IPA + 0x20_0000;
const MMIO_IPA: u64 = 0x9000_0000;

pub(super) fn run() {
    // Discovery says non-protected VMs exist.
    check(hvc(abi::KCORE_VERSION, [0; 4])[2] & abi::FEATURE_NON_PROTECTED != 0, 170);
    let r = hvc(abi::REGISTER_VM, [pfn(page(480)), 7, 0, 0]);
    check(status(r) == abi::INVALID_PARAMETER, 171);
    let r = hvc(abi::REGISTER_VM, [pfn(page(480)), abi::VM_NON_PROTECTED, 0, 0]);
    check(status(r) == 0, 171);
    let vm = r[1];
    for i in root_pages() - 1..8 {
        check(status(hvc(abi::DONATE_PAGE, [vm, pfn(page(481)) + i, 0, 0])) == 0, 172);
    }
    // A pool donation to a vmid nobody holds is refused.
    check(status(hvc(abi::DONATE_PAGE, [vm + 5, pfn(page(489)), 0, 0])) == abi::BAD_STATE, 172);
    check(status(hvc(abi::REGISTER_VCPU, [vm, 0, 0, 0])) == 0, 173);
    // The guest-physical layout: RAM only where the host says.
    check(status(hvc(abi::ADD_RAM_REGION, [vm, LOAD_IPA, RAM_SIZE, 0])) == 0, 174);
    check(status(hvc(abi::ADD_RAM_REGION, [vm, LOAD_IPA + 4096, 4096, 0])) == abi::EXISTS, 174);
    check(status(hvc(abi::ADD_RAM_REGION, [vm, 0xA000_0123, 4096, 0])) == abi::INVALID_PARAMETER, 174);
    // No authenticated images for this kind; set-up ends without a signature.
    check(status(hvc(abi::SET_BOOT_INFO, [vm, LOAD_IPA, 4096, pfn(page(489))])) == abi::BAD_STATE, 175);
    check(status(hvc(abi::VERIFY_VM, [vm, 0, 0, 0])) == 0, 175);
    check(status(hvc(abi::ADD_RAM_REGION, [vm, 0xA000_0000, 4096, 0])) == abi::BAD_STATE, 175);

    // The program and a data page, lent: the host keeps them.
    let (code, data, fresh, later) = (page(490), page(495), page(496), page(497));
    fill(code, NP_IMG);
    write(data, 0x1234_5678);
    write(data + 8, 0);
    write(later, 0x77);
    check(status(hvc(abi::LEND_PAGE, [vm, LOAD_IPA, pfn(code), 0])) == 0, 176);
    check(status(hvc(abi::LEND_PAGE, [vm, DATA_IPA, pfn(data), 0])) == 0, 176);
    check(status(hvc(abi::LEND_PAGE, [vm, DATA_IPA + 0x1000, pfn(data), 0])) == abi::DENIED, 177);
    check(status(hvc(abi::LEND_PAGE, [vm, 0x4000_0000, pfn(page(498)), 0])) == abi::INVALID_PARAMETER, 177);
    check(status(hvc(abi::DONATE_PAGE, [0, pfn(data), 0, 0])) == abi::DENIED, 177);
    check(status(hvc(abi::RECLAIM_PAGE, [vm, FAULT_IPA, 0, 0])) == abi::NOT_FOUND, 177);
    // Registers: the host sets the entry state; EL2 or AArch32 state is refused.
    check(status(hvc(abi::SET_VCPU_REG, [vm, 0, REG_PC, LOAD_IPA])) == 0, 178);
    check(status(hvc(abi::SET_VCPU_REG, [vm, 0, REG_X0, 0x600d])) == 0, 178);
    check(status(hvc(abi::SET_VCPU_REG, [vm, 0, REG_PSTATE, 0x3c9])) == abi::INVALID_PARAMETER, 178);
    check(status(hvc(abi::SET_VCPU_REG, [vm, 0, REG_PSTATE, 0x3d5])) == abi::INVALID_PARAMETER, 178);
    check(status(hvc(abi::SET_VCPU_REG, [vm, 0, 60, 1])) == abi::INVALID_PARAMETER, 178);
    let r = hvc(abi::GET_VCPU_REG, [vm, 0, REG_PC, 0]);
    check(status(r) == 0 && r[1] == LOAD_IPA, 179);
    let r = hvc(abi::GET_VCPU_REG, [vm, 0, REG_PSTATE, 0]);
    check(status(r) == 0 && r[1] == 0x3c5, 179);

    let mut reports = [u64::MAX; 8];
    let (mut faults_seen, mut wfis, mut mmio) = (0, 0, 0);
    for _ in 0..100 {
        let r = hvc5(abi::VCPU_RUN, [vm, 0, 0, 0]);
        check(r[0] == 0, 180);
        match r[1] {
            1 if r[2] >= 0x0900_1000 && r[2] < 0x0900_1040 && r[3] == 7 => {
                reports[((r[2] - 0x0900_1000) / 8) as usize] = r[4];
            }
            1 if r[2] == MMIO_IPA => {
                check(r[3] == 7 && r[4] == 0xabcdef, 181);
                mmio += 1;
                // Take the page back: unmapped from the guest, plainly the host's again.
                let r = hvc(abi::RECLAIM_PAGE, [vm, FAULT_IPA, 0, 0]);
                check(status(r) == 0 && r[1] == pfn(fresh), 182);
                check(read(fresh) == 0xabcdef, 182);
            }
            2 => {
                check(r[2] == FAULT_IPA, 183);
                let backing = if faults_seen == 0 { fresh } else { later };
                faults_seen += 1;
                check(status(hvc(abi::MAP_VM_PAGE, [vm, 0, pfn(backing), 0])) == 0, 183);
            }
            3 => {
                wfis += 1;
                // The guest's write, seen by the host while the VM lives; its registers too.
                check(read(data + 8) == 0x6e6f_6e2d_7072_6f74, 184);
                let r = hvc(abi::GET_VCPU_REG, [vm, 0, REG_X9, 0]);
                check(status(r) == 0 && r[1] == 0x5555, 184);
                write(data + 16, 0xbeef);
            }
            5 => break,
            _ => check(false, 185),
        }
    }
    check(reports[0] == 0x600d, 186);
    check(reports[1] == 0x1234_5678, 187);
    check(reports[2] == 0xbeef, 188);
    check(reports[3] == 0xabcdef, 189);
    check(reports[4] == 0x77, 190);
    check(reports[5] == 1, 191); // the features bitmap: function 0 only
    check(reports[6] as i64 == abi::NOT_SUPPORTED, 191);
    check(faults_seen == 2 && wfis == 1 && mmio == 1, 192);

    // Destroy gives every lent page back, unscrubbed: it is the host's memory.
    check(status(hvc(abi::DESTROY_VM, [vm, 0, 0, 0])) == 0, 193);
    let before = faults();
    check(read(data + 8) == 0x6e6f_6e2d_7072_6f74 && read(later) == 0x77, 193);
    check(faults() == before, 193);
    check(status(hvc(abi::DONATE_PAGE, [0, pfn(data), 0, 0])) == 0, 194);

    // A protected VM's registers stay KCore's, and lending to it is refused.
    let r = hvc(abi::REGISTER_VM, [pfn(page(480)), abi::VM_PROTECTED, 0, 0]);
    check(status(r) == 0, 195);
    let pvm = r[1];
    for i in root_pages() - 1..root_pages() + 1 {
        check(status(hvc(abi::DONATE_PAGE, [pvm, pfn(page(481)) + i, 0, 0])) == 0, 195);
    }
    check(status(hvc(abi::REGISTER_VCPU, [pvm, 0, 0, 0])) == 0, 195);
    check(status(hvc(abi::GET_VCPU_REG, [pvm, 0, REG_PC, 0])) == abi::DENIED, 196);
    check(status(hvc(abi::SET_VCPU_REG, [pvm, 0, REG_PC, 0])) == abi::DENIED, 196);
    check(status(hvc(abi::LEND_PAGE, [pvm, LOAD_IPA, pfn(page(498)), 0])) == abi::DENIED, 196);
    check(status(hvc(abi::DESTROY_VM, [pvm, 0, 0, 0])) == 0, 197);
}
