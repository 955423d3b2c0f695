// SPDX-License-Identifier: GPL-2.0

//! The random fake-device run: a seeded mix of valid, duplicate, out-of-order and malformed
//! control messages, data and guest file operations, with the driver checked after every
//! batch against [`crate::protocol_model::Model`].

use super::*;
use crate::protocol_model::{DataFate, Model};
use kernel::page::PAGE_SIZE;

/// Number of ports the random device has.
const MAX_PORTS: u32 = 6;
/// Ids the run names: two beyond the device's, which must never exist.
const IDS: u32 = MAX_PORTS + 2;
/// Size of the driver's control and receive buffers: a used length beyond it is capped.
const BUF_SIZE: usize = PAGE_SIZE;

/// The control message of the next random kind for port `id`.
fn random_message(rng: &mut Rng, id: u32) -> Result<KVec<u8>> {
    let mut name = [0u8; 15];
    name[..10].copy_from_slice(b"org.test.r");
    for b in &mut name[10..14] {
        *b = b'a' + rng.below(26) as u8;
    }
    let (cols, rows) = (1 + rng.below(300) as u16, 1 + rng.below(100) as u16);
    let mut size = [0u8; 4];
    size[..2].copy_from_slice(&cols.to_le_bytes());
    size[2..].copy_from_slice(&rows.to_le_bytes());
    let (event, value, payload): (u16, u16, &[u8]) = match rng.below(100) {
        0..=9 => (EV_PORT_ADD, 1, &[]),
        10..=17 => (EV_PORT_REMOVE, 0, &[]),
        18..=22 => (EV_CONSOLE_PORT, 1, &[]),
        23..=42 => (EV_PORT_OPEN, rng.below(2) as u16, &[]),
        43..=57 => (EV_PORT_NAME, 1, &name),
        58..=62 => (EV_PORT_NAME, 1, &[]),
        63..=77 => (EV_RESIZE, 0, &size),
        78..=82 => (EV_RESIZE, 0, &size[..1]),
        83..=87 => (rng.below(0x10000) as u16, rng.below(3) as u16, &[]),
        _ => (EV_PORT_OPEN, 1, &[]),
    };
    let m = msg(id, event, value, payload);
    // `le_message` cannot report a failed allocation: its length tells.
    if m.len() != 8 + payload.len() {
        return Err(ENOMEM);
    }
    Ok(m)
}

/// Reads everything port `port`'s file can read without blocking: the bytes, and how the
/// last read ended.
fn read_all(port: &Port) -> Result<(KVec<u8>, Result<usize>)> {
    let mut got = KVec::new();
    let mut oom = false;
    loop {
        let r = port.read(true, usize::MAX, |d| {
            match got.extend_from_slice(d, GFP_KERNEL) {
                Ok(()) => d.len(),
                Err(_) => {
                    oom = true;
                    0
                }
            }
        });
        if oom {
            return Err(ENOMEM);
        }
        match r {
            Ok(n) if n > 0 => continue,
            end => return Ok((got, end)),
        }
    }
}

#[kunit_tests(virtio_console_rs_fake_random)]
mod tests {
    use super::*;

    /// The driver must match the model after every batch: the replies it sent, its port
    /// table (ids beyond the device's included), each port's name, host state, console and
    /// vtermno and window size, the data each open file reads, console output, and its
    /// control receive buffers. Nothing may crash, hang, warn or leak.
    #[test]
    fn seeded_random_control_and_data() -> Result {
        let seed = crate::module_parameters::fake_seed.value();
        let total = crate::module_parameters::fake_messages.value();
        let h = Host::new(F_MULTIPORT | F_SIZE, MAX_PORTS)?;
        let mut model = Model::new(MAX_PORTS, QSIZE, IDS, true)?;
        let mut rng = Rng::new(seed);
        // The open guest files, by port id.
        let mut files: [Option<Arc<Port>>; IDS as usize] = Default::default();
        // A control buffer's worth of bytes: a used length past the message delivers zeros.
        let mut page = KVec::from_elem(0u8, BUF_SIZE, GFP_KERNEL)?;
        let mut data_seq = 0u8;
        let mut sent = 0u64;
        let mut batches = 0u64;
        while sent < total {
            batches += 1;
            // A guest file opens or closes a port now and then.
            if rng.below(4) == 0 {
                let id = rng.below(IDS);
                if let Some(port) = files[id as usize].take() {
                    port.release();
                    model.close(id)?;
                } else {
                    let port = h.port(id);
                    assert_eq!(port.is_some(), model.port(id).is_some());
                    if let Some(port) = port {
                        let want = model.open(id);
                        assert_eq!(h.open_file(&port), want);
                        if want.is_ok() {
                            files[id as usize] = Some(port);
                        }
                    }
                }
            }

            // A batch of control messages, then one interrupt, as a host would.
            let batch = 1 + rng.below(16);
            // What was sent, for the report of a mismatch: (id, event, value, used).
            let mut trace = KVec::new();
            for _ in 0..batch {
                let id = rng.below(IDS);
                let m = random_message(&mut rng, id)?;
                let used = match rng.below(20) {
                    0 => rng.below(9),
                    1 => u32::MAX,
                    _ => m.len() as u32,
                };
                let delivered = (used as usize).min(BUF_SIZE);
                let posted = if delivered > m.len() {
                    page[..m.len()].copy_from_slice(&m);
                    model.control(&page[..delivered])?;
                    let ok = h.post_raw(&page, used);
                    page[..m.len()].fill(0);
                    ok
                } else {
                    model.control(&m[..delivered])?;
                    h.post_raw(&m, used)
                };
                // The driver gives every control buffer back: there is always one.
                assert!(posted);
                let event = u16::from_le_bytes([m[4], m[5]]);
                let value = u16::from_le_bytes([m[6], m[7]]);
                trace.push((id, event, value, delivered), GFP_KERNEL)?;
                sent += 1;
            }
            h.dev().interrupt(C_IVQ);
            h.settle();

            // Files whose port went away fail, and their close says nothing to the host.
            for id in model.take_dead_files().iter() {
                let port = files[*id as usize].take().ok_or(EINVAL)?;
                assert_eq!(port.read(true, 16, |d| d.len()), Err(ENODEV));
                port.release();
            }
            for (id, file) in files.iter().enumerate() {
                assert_eq!(
                    file.is_some(),
                    model.port(id as u32).is_some_and(|p| p.file_open)
                );
            }

            // Data for a random port, with a random used length.
            let id = rng.below(IDS);
            let is_idle_console = model
                .port(id)
                .is_some_and(|p| p.vtermno.is_some() && !p.file_open);
            // A console with no file and no tty keeps its input: not sent, so its ring never
            // runs dry.
            if !is_idle_console {
                let (len, used) = match rng.below(8) {
                    0 => (0, 0),
                    1 => (BUF_SIZE, u32::MAX),
                    2 => (BUF_SIZE, BUF_SIZE as u32),
                    _ => {
                        let n = 1 + rng.below(64);
                        (n as usize, n)
                    }
                };
                let mut data = KVec::with_capacity(len, GFP_KERNEL)?;
                for _ in 0..len {
                    data_seq = data_seq.wrapping_add(1);
                    data.push(data_seq, GFP_KERNEL)?;
                }
                let r = h.to_port(id, &data, used);
                if id >= MAX_PORTS {
                    // The device has no queues for it.
                    assert_eq!(r.err(), Some(ENODEV));
                } else {
                    match model.data(id, &data)? {
                        DataFate::NoBuffer => assert_eq!(r.err(), Some(EAGAIN)),
                        DataFate::Freed | DataFate::Dropped | DataFate::Queued => {
                            assert!(r.is_ok())
                        }
                    }
                }
            }
            // Every open file reads exactly what the host sent it, in order.
            for (id, file) in files.iter().enumerate() {
                let Some(port) = file else {
                    continue;
                };
                let (want, want_end) = model.read_all(id as u32).ok_or(EINVAL)?;
                let (got, end) = read_all(port)?;
                if got[..] != want[..] {
                    pr_err!(
                        "fake_random: batch {}: port {} read {} bytes {:?}..., the model says {} bytes {:?}...\n",
                        batches,
                        id,
                        got.len(),
                        &got[..got.len().min(8)],
                        want.len(),
                        &want[..want.len().min(8)]
                    );
                }
                assert_eq!(&got[..], &want[..]);
                assert_eq!(end, want_end);
            }

            // Console output from time to time; the host consumes it.
            if rng.below(4) == 0 {
                let id = rng.below(MAX_PORTS);
                let console = model.port(id).is_some_and(|p| p.vtermno.is_some());
                if console {
                    let port = h.port(id).ok_or(ENODEV)?;
                    assert_eq!(port.console_put(b"out"), Ok(3));
                }
                for q in 0..MAX_PORTS {
                    let mut out = KVec::new();
                    let taken = h.take_port_output(q, &mut out);
                    let (_, tx) = control::port_queues(q);
                    for t in taken.iter() {
                        h.dev().complete(tx, t.head, 0)?;
                    }
                    h.dev().interrupt(tx);
                    if console && q == id {
                        assert_eq!(&out[..], b"out");
                    } else {
                        assert!(out.is_empty());
                    }
                }
            }

            // The replies and the ports match the model.
            let (got, want) = (h.replies(), model.take_replies());
            if got[..] != want[..] {
                pr_err!(
                    "fake_random: batch {}: the guest sent {:?}, the model says {:?}; batch (id, event, value, length): {:?}\n",
                    batches,
                    &got[..],
                    &want[..],
                    &trace[..]
                );
            }
            assert_eq!(&got[..], &want[..]);
            let ids = h.port_ids();
            assert_eq!(ids.len(), model.nr_ports());
            for id in 0..IDS {
                let want = model.port(id);
                assert_eq!(ids.contains(&id), want.is_some());
                let (Some(want), Some(port)) = (want, h.port(id)) else {
                    continue;
                };
                assert_eq!(name_of(&port).as_deref(), want.name.as_deref());
                let (host_connected, vtermno) = {
                    let st = port.state.lock();
                    (st.host_connected, st.vtermno)
                };
                assert_eq!(host_connected, want.host_connected);
                assert_eq!(vtermno, want.vtermno.unwrap_or(0));
                assert_eq!(h.window_size(id), want.vtermno.map(|_| want.size));
            }
            assert_eq!(h.dev().pending(C_IVQ), QSIZE);
        }
        let consoles = (0..IDS)
            .filter(|&id| model.port(id).is_some_and(|p| p.vtermno.is_some()))
            .count();
        pr_info!(
            "fake_random: seed {:#x}, {} messages in {} batches, {} ports and {} consoles at the end\n",
            seed,
            sent,
            batches,
            model.nr_ports(),
            consoles
        );
        for (id, file) in files.iter_mut().enumerate() {
            if let Some(port) = file.take() {
                port.release();
                model.close(id as u32)?;
            }
        }
        assert_eq!(&h.replies()[..], &model.take_replies()[..]);
        // Removing the device frees every vtermno: the next one is 1 again.
        let ctx = h.ctx.clone();
        drop(h);
        let first = Ida::alloc_min(&ctx.globals.vtermnos, 1)?;
        assert_eq!(first.id(), 1);
        Ok(())
    }
}
