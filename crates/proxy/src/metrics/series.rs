//! A table of metric series keyed by a small value (response code, flags, protocol...), read
//! on every request without a lock.
//!
//! Lookups go through a direct-mapped array of write-once slots: a hit is one atomic load.
//! A key met for the first time takes the table's mutex once, creates its series and parks it
//! in a free slot, so every later request with that key finds it lock-free. Keys that find no
//! free slot (far more distinct keys than slots) keep using the mutex; with a few response
//! codes per destination that does not happen in practice.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// Slots per table: a destination rarely sees more than a handful of distinct outcomes.
const SLOTS: usize = 64;
/// Slots probed from the key's home slot before falling back to the mutex.
const PROBES: usize = 4;

/// A key that picks its home slot.
pub trait SlotKey: Copy + Eq {
    fn slot_hash(&self) -> u64;
}

/// One series: its key and its value (counters, histograms).
#[derive(Debug)]
pub struct Series<K, V> {
    pub key: K,
    pub value: V,
}

type Slot<K, V> = OnceLock<Arc<Series<K, V>>>;

pub struct SeriesTable<K, V> {
    slots: Box<[Slot<K, V>]>,
    /// Every series, in creation order: the source of truth (each key has one series) and
    /// what a scrape reads.
    all: Mutex<Vec<Arc<Series<K, V>>>>,
}

impl<K, V> Default for SeriesTable<K, V> {
    fn default() -> Self {
        SeriesTable {
            slots: (0..SLOTS).map(|_| OnceLock::new()).collect(),
            all: Mutex::new(Vec::new()),
        }
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for SeriesTable<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.series().iter()).finish()
    }
}

impl<K: SlotKey, V: Default> SeriesTable<K, V> {
    /// Runs `f` on the series of `key`, creating it the first time.
    pub fn with<R>(&self, key: K, f: impl FnOnce(&V) -> R) -> R {
        if let Some(s) = self.cached(key) {
            return f(&s.value);
        }
        f(&self.get(key).value)
    }

    /// The series of `key` as an owned handle (for connections, which keep it for their life).
    pub fn get(&self, key: K) -> Arc<Series<K, V>> {
        if let Some(s) = self.cached(key) {
            return s.clone();
        }
        let series = {
            let mut all = self.all.lock().unwrap_or_else(PoisonError::into_inner);
            match all.iter().find(|s| s.key == key) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(Series {
                        key,
                        value: V::default(),
                    });
                    all.push(s.clone());
                    s
                }
            }
        };
        // Park it for lock-free lookups; losing a race for a slot only means probing on.
        let _ = self
            .probe_of(key)
            .find(|slot| slot.get().is_none() && slot.set(series.clone()).is_ok());
        series
    }

    fn cached(&self, key: K) -> Option<&Arc<Series<K, V>>> {
        self.probe_of(key)
            .find_map(|slot| slot.get().filter(|s| s.key == key))
    }

    fn probe_of(&self, key: K) -> impl Iterator<Item = &Slot<K, V>> {
        let home = (key.slot_hash() % SLOTS as u64) as usize;
        (0..PROBES).filter_map(move |i| self.slots.get((home + i) % SLOTS))
    }
}

impl<K, V> SeriesTable<K, V> {
    /// Every series, for a scrape.
    pub fn series(&self) -> Vec<Arc<Series<K, V>>> {
        self.all
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A cheap, well-mixed hash of a packed key (the 64-bit finaliser of MurmurHash3).
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Key(u64);

    impl SlotKey for Key {
        fn slot_hash(&self) -> u64 {
            // Every key homes on one slot, to exercise probing and the fallback.
            self.0 / 1000
        }
    }

    #[test]
    fn one_series_per_key_even_past_the_slots() {
        let t: SeriesTable<Key, AtomicU64> = SeriesTable::default();
        for round in 0..3 {
            for k in 0..100 {
                t.with(Key(k), |v| v.fetch_add(1, Ordering::Relaxed));
            }
            assert_eq!(t.series().len(), 100, "round {round}");
        }
        assert!(
            t.series()
                .iter()
                .all(|s| s.value.load(Ordering::Relaxed) == 3)
        );
        assert!(Arc::ptr_eq(&t.get(Key(7)), &t.get(Key(7))));
    }

    #[test]
    fn concurrent_first_use_makes_one_series() {
        let t: Arc<SeriesTable<Key, AtomicU64>> = Arc::default();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for k in 0..10 {
                        t.with(Key(k * 1000), |v| v.fetch_add(1, Ordering::Relaxed));
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let all = t.series();
        assert_eq!(all.len(), 10);
        assert!(all.iter().all(|s| s.value.load(Ordering::Relaxed) == 4));
    }
}
