// SPDX-License-Identifier: GPL-2.0

//! The port table of a device: one slot per port id, allocated once at probe for
//! `max_nr_ports` (in process context, outside any lock), so that adding a port never
//! allocates under the device's IRQ spinlock, and a port is found by its id or by the index
//! of one of its queues in constant time, as the queue interrupts need.
//!
//! The table holds each entry in a box of its own, so a slot costs one pointer: 4 KiB for a
//! 511-port device.

use crate::control;
use kernel::{alloc::KVVec, prelude::*};

/// The entries of a device's ports, indexed by port id.
pub(crate) struct PortTable<T> {
    slots: KVVec<Option<KBox<T>>>,
    len: usize,
}

impl<T> PortTable<T> {
    /// A table for ports `0..max_nr_ports`, all empty. Process context.
    pub(crate) fn new(max_nr_ports: u32) -> Result<Self> {
        let n = max_nr_ports as usize;
        let mut slots = KVVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            // Cannot fail: the capacity was reserved above.
            let _ = slots.push_within_capacity(None);
        }
        Ok(Self { slots, len: 0 })
    }

    /// A table with no slot, which allocates nothing (what a removed device keeps).
    pub(crate) fn empty() -> Self {
        Self {
            slots: KVVec::new(),
            len: 0,
        }
    }

    /// How many ports are in the table.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The entry of port `id`, if it is in the table.
    pub(crate) fn get(&self, id: u32) -> Option<&T> {
        self.slots.get(id as usize)?.as_deref()
    }

    /// The entry of port `id`, if it is in the table, to change it.
    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.slots.get_mut(id as usize)?.as_deref_mut()
    }

    /// The entry of the port that owns data queue `index`, and whether that queue is the
    /// port's receive queue; `None` for the control queues and for ports not in the table.
    pub(crate) fn of_queue(&self, index: u32) -> Option<(&T, bool)> {
        let (id, rx) = control::queue_port(index)?;
        Some((self.get(id)?, rx))
    }

    /// Puts `entry` in the slot of port `id`; never allocates. Gives the entry back if `id` is
    /// out of range or taken.
    pub(crate) fn insert(&mut self, id: u32, entry: KBox<T>) -> Result<(), KBox<T>> {
        match self.slots.get_mut(id as usize) {
            Some(slot @ None) => {
                *slot = Some(entry);
                self.len += 1;
                Ok(())
            }
            _ => Err(entry),
        }
    }

    /// Takes the entry of port `id` out of the table. The caller drops it (outside the lock).
    pub(crate) fn take(&mut self, id: u32) -> Option<KBox<T>> {
        let entry = self.slots.get_mut(id as usize)?.take()?;
        self.len -= 1;
        Some(entry)
    }

    /// The entries, in port id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter_map(|s| s.as_deref())
    }
}

#[kunit_tests(virtio_console_rs_port_table)]
mod tests {
    use super::*;

    fn boxed(v: u32) -> Result<KBox<u32>> {
        Ok(KBox::new(v, GFP_KERNEL)?)
    }

    #[test]
    fn entries_are_found_by_id_and_taken_out() -> Result {
        let mut t = PortTable::new(4)?;
        assert_eq!(t.len(), 0);
        assert!(t.insert(3, boxed(30)?).is_ok());
        assert!(t.insert(0, boxed(0)?).is_ok());
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(3), Some(&30));
        assert_eq!(t.get(1), None);
        if let Some(v) = t.get_mut(3) {
            *v = 31;
        }
        assert_eq!(t.get(3), Some(&31));
        assert_eq!(t.take(3).as_deref(), Some(&31));
        assert!(t.take(3).is_none());
        assert_eq!(t.get(3), None);
        assert_eq!(t.len(), 1);
        Ok(())
    }

    #[test]
    fn a_taken_or_out_of_range_slot_gives_the_entry_back() -> Result {
        let mut t = PortTable::new(2)?;
        assert!(t.insert(1, boxed(1)?).is_ok());
        assert_eq!(t.insert(1, boxed(2)?).err().as_deref(), Some(&2));
        assert_eq!(t.insert(2, boxed(3)?).err().as_deref(), Some(&3));
        assert_eq!(t.insert(u32::MAX, boxed(4)?).err().as_deref(), Some(&4));
        assert_eq!(t.get(1), Some(&1));
        assert_eq!(t.get(u32::MAX), None);
        assert_eq!(t.len(), 1);
        let mut e = PortTable::<u32>::empty();
        assert_eq!(e.insert(0, boxed(5)?).err().as_deref(), Some(&5));
        Ok(())
    }

    #[test]
    fn queue_indices_map_to_their_port() -> Result {
        // The numbering of the virtio spec: port 0 on queues 0 and 1, the control queues 2
        // and 3, port n (n > 0) on queues 2n + 2 and 2n + 3.
        let mut t = PortTable::new(511)?;
        for id in [0, 1, 2, 255, 510] {
            assert!(t.insert(id, boxed(id)?).is_ok());
        }
        assert_eq!(t.of_queue(0), Some((&0, true)));
        assert_eq!(t.of_queue(1), Some((&0, false)));
        assert_eq!(t.of_queue(2), None);
        assert_eq!(t.of_queue(3), None);
        assert_eq!(t.of_queue(4), Some((&1, true)));
        assert_eq!(t.of_queue(5), Some((&1, false)));
        assert_eq!(t.of_queue(6), Some((&2, true)));
        assert_eq!(t.of_queue(2 * 255 + 3), Some((&255, false)));
        assert_eq!(t.of_queue(2 * 510 + 2), Some((&510, true)));
        assert_eq!(t.of_queue(2 * 510 + 3), Some((&510, false)));
        // Port 3 is not in the table; queues beyond the last port belong to no port.
        assert_eq!(t.of_queue(8), None);
        assert_eq!(t.of_queue(2 * 511 + 2), None);
        // Every id maps back from both its queues.
        for id in 0..511u32 {
            let (rx, tx) = control::port_queues(id);
            assert_eq!(control::queue_port(rx), Some((id, true)));
            assert_eq!(control::queue_port(tx), Some((id, false)));
        }
        Ok(())
    }

    #[test]
    fn iteration_is_in_id_order() -> Result {
        let mut t = PortTable::new(8)?;
        for id in [5, 1, 7, 0] {
            assert!(t.insert(id, boxed(id)?).is_ok());
        }
        let _ = t.take(7);
        let mut seen = KVec::new();
        for &v in t.iter() {
            seen.push(v, GFP_KERNEL)?;
        }
        assert_eq!(&seen[..], &[0, 1, 5]);
        Ok(())
    }
}
