//! The memory that image decoding may hold at once, all threads together: every decode
//! ([`super::folder::decode_framed`], in training, evaluation, prediction and the server)
//! reserves its decoded image's bytes here before it allocates them, and waits while the
//! budget is spent.
//!
//! So a folder of 24-megapixel camera photos, or a server sent many of them at once, stays
//! within `--decode-memory` (default [`DEFAULT_DECODE_MEMORY`]) however many threads decode.
//! Large images may use only [`LARGE_SHARE`] of the budget: the rest is kept for small ones
//! (at most [`SMALL_BYTES`] each), so a server's small requests do not queue behind heavy
//! decodes. An image that needs more than large images may ever hold is refused with a
//! message naming the setting.

use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

/// Default decode budget (1 GiB): room for an 8192x8192 16-bit RGBA PNG (512 MiB decoded,
/// plus its 192 MiB RGB copy) within the large share, or a dozen 24-megapixel JPEGs.
pub const DEFAULT_DECODE_MEMORY: u64 = 1 << 30;

/// Largest decode counted as small (16 MiB: a 2,300x2,300 RGB image), which may use the whole
/// budget; larger ones may use [`LARGE_SHARE`] of it.
pub const SMALL_BYTES: u64 = 16 << 20;

/// The part of the budget large decodes may hold together, in quarters (3: three quarters).
pub const LARGE_SHARE: u64 = 3;

/// A decode budget; [`global`] is the one every decode uses.
#[derive(Debug)]
pub struct DecodeBudget {
    capacity: u64,
    held: Mutex<u64>,
    freed: Condvar,
}

/// Bytes reserved from a [`DecodeBudget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a DecodeBudget,
    bytes: u64,
}

impl DecodeBudget {
    /// A budget of `capacity` bytes.
    pub fn new(capacity: u64) -> DecodeBudget {
        DecodeBudget { capacity, held: Mutex::new(0), freed: Condvar::new() }
    }

    /// Its size in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The most bytes a decode of `bytes` may find held before it must wait: the whole
    /// budget for a small one, [`LARGE_SHARE`] quarters of it for a large one.
    fn ceiling(&self, bytes: u64) -> u64 {
        if bytes <= SMALL_BYTES { self.capacity } else { self.capacity / 4 * LARGE_SHARE }
    }

    /// Whether a decode of `bytes` can ever be reserved.
    ///
    /// # Errors
    /// When it could not (more than large decodes may hold): a one-line reason for a person,
    /// naming the setting.
    pub fn fits(&self, bytes: u64) -> Result<(), String> {
        let ceiling = self.ceiling(bytes);
        if bytes > ceiling { Err(self.too_large(bytes, ceiling)) } else { Ok(()) }
    }

    /// Reserves `bytes`, waiting while the budget is spent.
    ///
    /// # Errors
    /// As [`DecodeBudget::fits`].
    pub fn reserve(&self, bytes: u64) -> Result<Reservation<'_>, String> {
        self.fits(bytes)?;
        let ceiling = self.ceiling(bytes);
        let mut held = self.lock();
        while *held + bytes > ceiling {
            held = self.freed.wait(held).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *held += bytes;
        Ok(Reservation { budget: self, bytes })
    }

    /// Reserves `bytes` if they fit now, without waiting; `None` if they must wait or can
    /// never fit.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation<'_>> {
        let ceiling = self.ceiling(bytes);
        let mut held = self.lock();
        (*held + bytes <= ceiling).then(|| {
            *held += bytes;
            Reservation { budget: self, bytes }
        })
    }

    /// Bytes reserved now.
    pub fn held(&self) -> u64 {
        *self.lock()
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        // The count stays consistent whatever panicked while it was locked: it is only ever
        // changed by whole additions and subtractions.
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn too_large(&self, bytes: u64, ceiling: u64) -> String {
        let mib = |b: u64| b.div_ceil(1 << 20);
        format!(
            "decoding it takes {} MiB, more than the {} MiB large images may use of the decode memory \
             (--decode-memory or CLASSIFY_DECODE_MEMORY, now {} MiB): shrink the image or raise the setting",
            mib(bytes),
            mib(ceiling),
            mib(self.capacity)
        )
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut held = self.budget.lock();
        *held -= self.bytes;
        drop(held);
        self.budget.freed.notify_all();
    }
}

static GLOBAL: OnceLock<DecodeBudget> = OnceLock::new();

/// Sets the size of the [`global`] budget; only the first call (before any decode) counts.
///
/// # Errors
/// When the budget is already in use with another size, or `bytes` is under twice
/// [`SMALL_BYTES`] (no room for a large image at all).
pub fn set_decode_memory(bytes: u64) -> Result<(), String> {
    let minimum = 2 * SMALL_BYTES;
    if bytes < minimum {
        return Err(format!("at least {} MiB are needed, room for one large image", minimum >> 20));
    }
    let budget = GLOBAL.get_or_init(|| DecodeBudget::new(bytes));
    if budget.capacity() == bytes { Ok(()) } else { Err("the decode memory was already set".into()) }
}

/// The budget every decode reserves from: [`DEFAULT_DECODE_MEMORY`] unless
/// [`set_decode_memory`] said otherwise first.
pub fn global() -> &'static DecodeBudget {
    GLOBAL.get_or_init(|| DecodeBudget::new(DEFAULT_DECODE_MEMORY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    const MIB: u64 = 1 << 20;

    #[test]
    fn large_decodes_leave_a_quarter_of_the_budget_to_small_ones() {
        let budget = DecodeBudget::new(400 * MIB);
        let first = budget.try_reserve(150 * MIB).expect("a large decode fits an empty budget");
        let _second = budget.try_reserve(150 * MIB).expect("two fit the large share of 300 MiB");
        assert!(budget.try_reserve(50 * MIB).is_none(), "a third large one waits: 350 MiB is past 300");
        let smalls: Vec<_> = (0..6).map(|_| budget.try_reserve(16 * MIB)).collect();
        assert!(smalls.iter().all(Option::is_some), "small decodes use the quarter kept for them");
        assert!(budget.try_reserve(16 * MIB).is_none(), "past the whole budget even small ones wait");
        assert_eq!(budget.held(), 396 * MIB);
        drop(first);
        drop(smalls);
        assert_eq!(budget.held(), 150 * MIB, "dropped reservations are given back");
        assert!(budget.try_reserve(150 * MIB).is_some());
    }

    #[test]
    fn a_decode_larger_than_the_large_share_is_refused_naming_the_setting() {
        let budget = DecodeBudget::new(400 * MIB);
        let err = budget.reserve(301 * MIB).unwrap_err();
        assert!(err.contains("301 MiB") && err.contains("300 MiB") && err.contains("--decode-memory"), "{err}");
        assert!(budget.reserve(300 * MIB).is_ok(), "the large share itself fits");
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_waiting_decode_goes_on_when_memory_is_given_back() {
        let budget = Arc::new(DecodeBudget::new(400 * MIB));
        let held = budget.reserve(300 * MIB).unwrap();
        let waiter = {
            let budget = Arc::clone(&budget);
            std::thread::spawn(move || budget.reserve(100 * MIB).map(|r| r.bytes).unwrap())
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "the large decode waits while the large share is held");
        drop(held);
        assert_eq!(waiter.join().unwrap(), 100 * MIB);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn the_global_budget_refuses_sizes_with_no_room_for_a_large_image() {
        let err = set_decode_memory(SMALL_BYTES).unwrap_err();
        assert!(err.contains("at least 32 MiB"), "{err}");
    }
}
