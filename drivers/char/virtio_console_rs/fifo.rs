// SPDX-License-Identifier: GPL-2.0

//! A first-in, first-out queue with a fixed number of slots, allocated once, so items can be
//! queued in interrupt context without allocating.

use kernel::{alloc::Flags, prelude::*};

/// A FIFO queue of at most `capacity` items.
///
/// # Invariants
///
/// - `len <= slots.len()`, and `head < slots.len()` unless `slots` is empty.
/// - The slots `head, head + 1, ..., head + len - 1` (modulo `slots.len()`) hold `Some`, the
///   others `None`.
pub(crate) struct Fifo<T> {
    slots: KVec<Option<T>>,
    head: usize,
    len: usize,
}

impl<T> Fifo<T> {
    /// Allocates a queue of `capacity` slots.
    pub(crate) fn new(capacity: usize, flags: Flags) -> Result<Self> {
        let mut slots = KVec::with_capacity(capacity, flags)?;
        for _ in 0..capacity {
            // Cannot fail: the capacity is there.
            let _ = slots.push_within_capacity(None);
        }
        Ok(Self {
            slots,
            head: 0,
            len: 0,
        })
    }

    /// The number of items queued.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether no item is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether another item would not fit.
    pub(crate) fn is_full(&self) -> bool {
        self.len == self.slots.len()
    }

    /// Queues `item` last, or gives it back if the queue is full.
    pub(crate) fn push(&mut self, item: T) -> core::result::Result<(), T> {
        if self.is_full() {
            return Err(item);
        }
        // Not full, so there is at least one slot and the modulo is defined.
        let tail = (self.head + self.len) % self.slots.len();
        match self.slots.get_mut(tail) {
            Some(slot) => *slot = Some(item),
            None => return Err(item),
        }
        self.len += 1;
        Ok(())
    }

    /// Takes the first item, if any.
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.is_empty() {
            return None;
        }
        let item = self.slots.get_mut(self.head)?.take();
        self.head = (self.head + 1) % self.slots.len();
        self.len -= 1;
        item
    }
}

#[kunit_tests(virtio_console_rs_fifo)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_the_wrap() -> Result {
        let mut q = Fifo::new(3, GFP_KERNEL)?;
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
        let mut next_in = 0u32;
        let mut next_out = 0u32;
        // Enough rounds to wrap several times, with the queue at every fill level.
        for round in 0..10 {
            let fill = round % 4;
            for _ in 0..fill.min(3) {
                assert_eq!(q.push(next_in), Ok(()));
                next_in += 1;
            }
            while let Some(v) = q.pop() {
                assert_eq!(v, next_out);
                next_out += 1;
            }
        }
        assert_eq!(next_in, next_out);
        assert!(next_in > 3);
        Ok(())
    }

    #[test]
    fn refuses_and_returns_an_item_when_full() -> Result {
        let mut q = Fifo::new(2, GFP_KERNEL)?;
        assert_eq!(q.push(1u8), Ok(()));
        assert_eq!(q.push(2), Ok(()));
        assert!(q.is_full());
        assert_eq!(q.len(), 2);
        assert_eq!(q.push(3), Err(3));
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.push(4), Ok(()));
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(4));
        assert_eq!(q.pop(), None);
        Ok(())
    }

    #[test]
    fn zero_capacity_holds_nothing() -> Result {
        let mut q = Fifo::new(0, GFP_KERNEL)?;
        assert!(q.is_full());
        assert!(q.is_empty());
        assert_eq!(q.push(7u8), Err(7));
        assert_eq!(q.pop(), None);
        Ok(())
    }

    #[test]
    fn drops_what_is_left() -> Result {
        struct Counted<'a>(&'a core::cell::Cell<u32>);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let dropped = core::cell::Cell::new(0);
        {
            let mut q = Fifo::new(4, GFP_KERNEL)?;
            for _ in 0..3 {
                assert!(q.push(Counted(&dropped)).is_ok());
            }
            drop(q.pop());
            assert_eq!(dropped.get(), 1);
        }
        assert_eq!(dropped.get(), 3);
        Ok(())
    }
}
