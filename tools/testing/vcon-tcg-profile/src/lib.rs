// SPDX-License-Identifier: GPL-2.0
//! A QEMU TCG plugin (plugin API version 1, as in QEMU 7.2) that counts the guest
//! instructions executed in each translation block of the guest kernel, and writes them out
//! when QEMU exits: one line `start_address instructions` per block.
//!
//! Under `-icount shift=0` guest time is guest instructions, so `vcon-harness profile`
//! turns two such counts (a workload of N and of 2N units) into instructions per unit and per
//! kernel function, without the boot in them.
//!
//! Load it with `-plugin file=libvcon_tcg_profile.so,arg=out=PATH` (QEMU 7.2 syntax).
//! Only the declarations this plugin needs are written here, from QEMU's documented plugin
//! API; the functions are resolved in the QEMU binary when it loads the plugin.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::io::Write;
use std::sync::Mutex;

type PluginId = u64;

#[repr(C)]
struct Tb {
    _private: [u8; 0],
}

/// `QEMU_PLUGIN_INLINE_ADD_U64`.
const INLINE_ADD_U64: c_int = 0;

/// Guest addresses at and above this are the kernel's (x86-64).
const KERNEL_START: u64 = 0xffff_8000_0000_0000;

extern "C" {
    fn qemu_plugin_register_vcpu_tb_trans_cb(id: PluginId, cb: extern "C" fn(PluginId, *mut Tb));
    fn qemu_plugin_register_atexit_cb(
        id: PluginId,
        cb: extern "C" fn(PluginId, *mut c_void),
        data: *mut c_void,
    );
    fn qemu_plugin_tb_n_insns(tb: *const Tb) -> usize;
    fn qemu_plugin_tb_vaddr(tb: *const Tb) -> u64;
    fn qemu_plugin_register_vcpu_tb_exec_inline(tb: *mut Tb, op: c_int, ptr: *mut c_void, imm: u64);
}

/// The plugin API version this plugin was written against.
#[no_mangle]
pub static qemu_plugin_version: c_int = 1;

struct State {
    out: String,
    /// One counter per block start address. The boxes are never freed while QEMU runs, so the
    /// addresses given to QEMU's inline adds stay valid.
    counters: HashMap<u64, Box<u64>>,
    /// Everything outside the kernel (user space), as one counter.
    user: Box<u64>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

extern "C" fn on_translate(_id: PluginId, tb: *mut Tb) {
    // SAFETY: QEMU passes a valid block for the duration of this callback.
    let (vaddr, n) = unsafe { (qemu_plugin_tb_vaddr(tb), qemu_plugin_tb_n_insns(tb) as u64) };
    let Ok(mut guard) = STATE.lock() else { return };
    let Some(st) = guard.as_mut() else { return };
    let slot: *mut u64 = if vaddr >= KERNEL_START {
        &mut **st.counters.entry(vaddr).or_insert_with(|| Box::new(0))
    } else {
        &mut *st.user
    };
    // SAFETY: `slot` points into a box that lives until QEMU exits (see `State::counters`).
    unsafe { qemu_plugin_register_vcpu_tb_exec_inline(tb, INLINE_ADD_U64, slot.cast(), n) };
}

extern "C" fn on_exit(_id: PluginId, _data: *mut c_void) {
    let Ok(guard) = STATE.lock() else { return };
    let Some(st) = guard.as_ref() else { return };
    let mut text = format!("user {}\n", *st.user);
    for (addr, n) in &st.counters {
        if **n != 0 {
            text.push_str(&format!("{addr:x} {}\n", **n));
        }
    }
    match std::fs::File::create(&st.out) {
        Ok(mut f) => {
            let _ = f.write_all(text.as_bytes());
        }
        Err(e) => eprintln!("vcon-tcg-profile: {}: {e}", st.out),
    }
}

/// Called by QEMU when it loads the plugin; `argv` holds the `arg=` options.
///
/// # Safety
///
/// QEMU passes `argc` valid C strings in `argv`.
#[no_mangle]
pub unsafe extern "C" fn qemu_plugin_install(
    id: PluginId,
    _info: *const c_void,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    let mut out = None;
    for i in 0..argc.max(0) as usize {
        // SAFETY: the caller passes `argc` valid strings.
        let a = unsafe { CStr::from_ptr(*argv.add(i)) }.to_string_lossy();
        if let Some(p) = a.strip_prefix("out=") {
            out = Some(p.to_string());
        }
    }
    let Some(out) = out else {
        eprintln!("vcon-tcg-profile: needs arg=out=PATH");
        return -1;
    };
    if let Ok(mut g) = STATE.lock() {
        *g = Some(State {
            out,
            counters: HashMap::new(),
            user: Box::new(0),
        });
    }
    // SAFETY: the callbacks match the signatures QEMU's API documents.
    unsafe {
        qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
        qemu_plugin_register_atexit_cb(id, on_exit, std::ptr::null_mut());
    }
    0
}
