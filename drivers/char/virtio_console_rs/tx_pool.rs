// SPDX-License-Identifier: GPL-2.0

//! A small stack of consumed transmit buffers kept for reuse, bounded in number and in
//! bytes, with room for its items allocated beforehand, so buffers can be put back under a
//! spinlock without allocating.
//!
//! While the host is behind a stream of writes it gives several buffers back at once; keeping
//! some of them lets the next writes reuse their memory instead of going through the slab
//! allocator twice per write (the buffer and its box), which is what made small and 4 KiB
//! writes slower than they needed to be.

use kernel::{alloc::Flags, prelude::*};

/// Something whose memory a [`Pool`] accounts for.
pub(crate) trait PoolItem {
    /// The bytes it holds.
    fn bytes(&self) -> usize;
}

/// At most `capacity` items holding at most `budget` bytes together, except that one item is
/// always kept whatever its size; the last one put back is the first one taken.
///
/// # Invariants
///
/// - `items.len() <= items.capacity()`, and the capacity is never grown: `put` only pushes
///   within it.
/// - `bytes` is the sum of `bytes()` over `items`; it is at most `budget` when there is more
///   than one item.
pub(crate) struct Pool<T: PoolItem> {
    items: KVec<T>,
    bytes: usize,
    budget: usize,
}

impl<T: PoolItem> Pool<T> {
    /// Allocates room for `capacity` items holding at most `budget` bytes.
    pub(crate) fn new(capacity: usize, budget: usize, flags: Flags) -> Result<Self> {
        Ok(Self {
            items: KVec::with_capacity(capacity, flags)?,
            bytes: 0,
            budget,
        })
    }

    /// The number of items kept.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// The bytes the kept items hold.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many items the pool can keep.
    pub(crate) fn room(&self) -> usize {
        self.items.capacity()
    }

    /// Gives the pool the room of `room` (an empty vector allocated by the caller, outside
    /// any lock) if that is more than it has, keeping its items; the smaller of the two
    /// vectors is dropped.
    pub(crate) fn grow(&mut self, mut room: KVec<T>) {
        if room.capacity() <= self.items.capacity() {
            return;
        }
        room.clear();
        for item in self.items.drain_all() {
            // Cannot fail: `room` is larger than the old storage, which held every item.
            let _ = room.push_within_capacity(item);
        }
        // INVARIANT: the same items are kept, so `bytes` is unchanged; the capacity only
        // changes here, never in `put`.
        self.items = room;
    }

    /// Keeps `item`, or gives it back if the pool is full or the item would take it over its
    /// budget (the caller then drops it).
    pub(crate) fn put(&mut self, item: T) -> core::result::Result<(), T> {
        let size = item.bytes();
        if !self.items.is_empty() && self.bytes.saturating_add(size) > self.budget {
            return Err(item);
        }
        self.items.push_within_capacity(item).map_err(|e| e.0)?;
        // INVARIANT: the item is counted; the check above keeps the budget.
        self.bytes += size;
        Ok(())
    }

    /// Takes the item put back last.
    pub(crate) fn take(&mut self) -> Option<T> {
        let item = self.items.pop()?;
        // INVARIANT: the item was counted when it was put back.
        self.bytes -= item.bytes();
        Some(item)
    }

    /// Drops every item.
    pub(crate) fn clear(&mut self) {
        self.items.clear();
        // INVARIANT: no item is left.
        self.bytes = 0;
    }
}

/// Reuses `spare` (an item taken from a [`Pool`]) if it holds at least `len` bytes, filling it
/// from `src` with `refill`; otherwise drops it and makes a new item from `src` with `alloc`.
/// If `refill` fails, the item is dropped and its error returned.
pub(crate) fn reuse_or_alloc<T: PoolItem, S>(
    spare: Option<T>,
    len: usize,
    src: S,
    refill: impl FnOnce(&mut T, S) -> Result,
    alloc: impl FnOnce(S) -> Result<T>,
) -> Result<T> {
    match spare {
        Some(mut item) if item.bytes() >= len => {
            refill(&mut item, src)?;
            Ok(item)
        }
        _ => alloc(src),
    }
}

#[kunit_tests(virtio_console_rs_tx_pool)]
mod tests {
    use super::*;

    /// A test item of the given size.
    #[derive(Debug, PartialEq)]
    struct Item(usize);

    impl PoolItem for Item {
        fn bytes(&self) -> usize {
            self.0
        }
    }

    impl PoolItem for KBox<usize> {
        fn bytes(&self) -> usize {
            **self
        }
    }

    #[test]
    fn keeps_up_to_its_capacity_and_gives_the_rest_back() -> Result {
        let mut p = Pool::new(3, 100, GFP_KERNEL)?;
        assert_eq!(p.len(), 0);
        assert_eq!(p.take(), None);
        for i in 0..3 {
            assert_eq!(p.put(Item(i)), Ok(()));
        }
        assert_eq!(p.put(Item(3)), Err(Item(3)));
        assert_eq!((p.len(), p.bytes()), (3, 3));
        assert_eq!(p.take(), Some(Item(2)));
        assert_eq!(p.put(Item(4)), Ok(()));
        assert_eq!(p.take(), Some(Item(4)));
        assert_eq!(p.take(), Some(Item(1)));
        assert_eq!(p.take(), Some(Item(0)));
        assert_eq!(p.take(), None);
        assert_eq!(p.bytes(), 0);
        Ok(())
    }

    #[test]
    fn keeps_no_more_than_its_budget_but_always_one() -> Result {
        let mut p = Pool::new(8, 100, GFP_KERNEL)?;
        // One item is kept whatever its size.
        assert_eq!(p.put(Item(500)), Ok(()));
        assert_eq!(p.put(Item(1)), Err(Item(1)));
        assert_eq!(p.take(), Some(Item(500)));
        assert_eq!(p.put(Item(60)), Ok(()));
        assert_eq!(p.put(Item(40)), Ok(()));
        assert_eq!(p.put(Item(1)), Err(Item(1)));
        assert_eq!((p.len(), p.bytes()), (2, 100));
        assert_eq!(p.take(), Some(Item(40)));
        assert_eq!(p.put(Item(30)), Ok(()));
        assert_eq!(p.bytes(), 90);
        Ok(())
    }

    #[test]
    fn clear_frees_every_item_and_keeps_the_room() -> Result {
        let mut p = Pool::new(4, 100, GFP_KERNEL)?;
        for i in 0..4 {
            p.put(KBox::new(i, GFP_KERNEL)?).map_err(|_| ENOSPC)?;
        }
        p.clear();
        assert_eq!((p.len(), p.bytes()), (0, 0));
        // Room is still there after a clear, without allocating.
        for i in 0..4 {
            assert!(p.put(KBox::new(i, GFP_KERNEL)?).is_ok());
        }
        Ok(())
    }

    #[test]
    fn grow_keeps_the_items_and_gives_more_room() -> Result {
        let mut p = Pool::new(1, 100, GFP_KERNEL)?;
        assert_eq!(p.put(Item(10)), Ok(()));
        assert_eq!(p.put(Item(20)), Err(Item(20)));
        // Less room than the pool has changes nothing.
        p.grow(KVec::with_capacity(1, GFP_KERNEL)?);
        assert_eq!((p.room(), p.len(), p.bytes()), (1, 1, 10));
        p.grow(KVec::with_capacity(3, GFP_KERNEL)?);
        assert!(p.room() >= 3);
        assert_eq!((p.len(), p.bytes()), (1, 10));
        assert_eq!(p.put(Item(20)), Ok(()));
        assert_eq!(p.put(Item(30)), Ok(()));
        assert_eq!(p.take(), Some(Item(30)));
        assert_eq!(p.take(), Some(Item(20)));
        assert_eq!(p.take(), Some(Item(10)));
        assert_eq!(p.take(), None);
        Ok(())
    }

    #[test]
    fn a_pool_of_zero_keeps_nothing() -> Result {
        let mut p = Pool::new(0, 100, GFP_KERNEL)?;
        assert_eq!(p.put(Item(7)), Err(Item(7)));
        assert_eq!((p.len(), p.bytes()), (0, 0));
        Ok(())
    }

    #[test]
    fn reuse_or_alloc_reuses_only_a_large_enough_item() -> Result {
        let refill = |item: &mut Item, add: usize| {
            item.0 += add;
            Ok(())
        };
        let alloc = |add: usize| Ok(Item(add));
        // Large enough (exactly, or more): reused and filled, nothing allocated.
        assert_eq!(
            reuse_or_alloc(Some(Item(8)), 8, 1000, refill, |_| Err(ENOMEM)),
            Ok(Item(1008))
        );
        assert_eq!(
            reuse_or_alloc(Some(Item(9)), 8, 1000, refill, |_| Err(ENOMEM)),
            Ok(Item(1009))
        );
        // Too small, or none: a new item, the spare not filled.
        assert_eq!(
            reuse_or_alloc(Some(Item(7)), 8, 8, refill, alloc),
            Ok(Item(8))
        );
        assert_eq!(reuse_or_alloc(None, 8, 8, refill, alloc), Ok(Item(8)));
        // A failed refill is the result; no allocation is tried.
        assert_eq!(
            reuse_or_alloc(Some(Item(8)), 8, 8, |_, _| Err(EFAULT), alloc),
            Err(EFAULT)
        );
        Ok(())
    }
}
