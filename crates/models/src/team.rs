//! A team: a few threads running one closure together, with spinning barriers between its stages
//! and tasks shared out inside them.
//!
//! A decode step is ~200 small matrix-vector products (a few hundred microseconds each at most).
//! As separate rayon parallel regions each one wakes the pool, waits for the slowest task and puts
//! the threads back to sleep: the futex wakeups and the idle tails cost a large share of the step
//! (profiled at ~15% of a SmolLM2 decode step in `sched_yield` and `futex` alone). A team starts
//! its threads once per step ([`run`]); each stage gives every member a contiguous share of its
//! tasks, which others steal from when they run out (so a thread slowed by the machine is
//! helped), and ends at a barrier whose waiters spin briefly before yielding.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Spins before a waiter starts yielding its core: a stage's imbalance is usually microseconds,
/// far less than a sleep and wakeup, but a member descheduled by the machine must not burn the
/// other cores for long.
const SPINS: u32 = 1 << 14;

/// A reusable barrier for a fixed number of members (generation-counting, no allocation).
#[derive(Debug)]
struct Barrier {
    size: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    /// A member panicked: waiting would never end.
    poisoned: AtomicBool,
}

impl Barrier {
    fn wait(&self) {
        if self.size <= 1 {
            return;
        }
        let generation = self.generation.load(Ordering::Acquire);
        // AcqRel: the last arrival acquires every member's writes before this barrier and
        // releases them, with its own, through the generation bump below.
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.size {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if self.poisoned.load(Ordering::Acquire) {
                panic!("a decode team member panicked");
            }
            if spins < SPINS {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// One member's remaining tasks of one stage, `front` (low half) to `back` (high half), on a
/// cache line of its own: the owner takes from the front, others steal from the back.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot(AtomicU64);

fn unpack(v: u64) -> (u64, u64) {
    (v & 0xffff_ffff, v >> 32)
}

impl Slot {
    /// Takes the task at the front (the owner) or the back (a thief), if any is left.
    fn take(&self, front: bool) -> Option<usize> {
        let mut v = self.0.load(Ordering::Acquire);
        loop {
            let (f, b) = unpack(v);
            if f >= b {
                return None;
            }
            let (next, t) = if front {
                (v + 1, f)
            } else {
                (v - (1 << 32), b - 1)
            };
            match self
                .0
                .compare_exchange_weak(v, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(t as usize),
                Err(now) => v = now,
            }
        }
    }
}

/// What every member of one [`run`] shares.
#[derive(Debug)]
struct Shared {
    size: usize,
    barrier: Barrier,
    /// `size` slots per stage.
    slots: Vec<Slot>,
}

/// One thread's handle inside [`run`]: its index, the barrier and the stages' task slots.
#[derive(Debug)]
pub(crate) struct Member<'a> {
    index: usize,
    shared: &'a Shared,
    /// The next counter this member's [`Member::tasks`] takes: every member calls `tasks` in the
    /// same order, so the n-th call of each reads the same counter.
    next: std::cell::Cell<usize>,
}

impl Member<'_> {
    /// This member's index in `0..size`.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Waits until every member has called `sync` as many times as this one: what any member
    /// wrote before is visible to all after.
    pub(crate) fn sync(&self) {
        self.shared.barrier.wait();
    }

    /// Calls `f(t)` for the tasks `t` in `0..n` this member claims; over the team, every task
    /// runs exactly once. Member `i` of `s` owns the `i`-th contiguous `n / s` of the tasks and
    /// runs them in order, then steals from the ends of the others' that are left: each member
    /// streams through one region of memory (a weight's rows), its outputs do not share cache
    /// lines with another member's but at the ends, and a member the machine slows down is
    /// helped. Every member must call `tasks` for the same stages in the same order (the n-th
    /// call of each is the same stage).
    ///
    /// # Panics
    /// More stages than [`run`]'s `stages`, or `n` of 2^32 or more.
    pub(crate) fn tasks(&self, n: usize, mut f: impl FnMut(usize)) {
        let c = self.next.get();
        self.next.set(c + 1);
        let size = self.shared.size;
        let slots = &self.shared.slots[c * size..(c + 1) * size];
        assert!(n < 1 << 32, "a team stage of {n} tasks");
        let (a, b) = (n * self.index / size, n * (self.index + 1) / size);
        // A thief that looked before this store saw no tasks: they stay this member's.
        slots[self.index]
            .0
            .store(a as u64 | (b as u64) << 32, Ordering::Release);
        while let Some(t) = slots[self.index].take(true) {
            f(t);
        }
        for k in 1..size {
            let victim = &slots[(self.index + k) % size];
            while let Some(t) = victim.take(false) {
                f(t);
            }
        }
    }
}

/// Runs `f` once on each of `size` members at the same time: the calling thread and `size - 1`
/// scoped threads of its own. `stages` bounds the [`Member::tasks`] calls a member makes.
///
/// Its own threads, not rayon's pool: members spin at barriers instead of stealing work, so two
/// teams broadcast on one pool at once (two requests decoding together) could each hold a thread
/// the other waits for. A spawn and join costs ~66 us here, about 1% of a decode step.
///
/// # Panics
/// When a member panics, the others panic at their next barrier, and the panic reaches the caller.
pub(crate) fn run(size: usize, stages: usize, f: impl Fn(&Member) + Sync) {
    let size = size.max(1);
    let shared = Shared {
        barrier: Barrier {
            size,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        },
        size,
        slots: (0..stages * size).map(|_| Slot::default()).collect(),
    };
    let one = |index| {
        // Marks the team poisoned if `f` unwinds, so no member waits for this one forever.
        struct Poison<'a>(&'a AtomicBool);
        impl Drop for Poison<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.store(true, Ordering::Release);
                }
            }
        }
        let _poison = Poison(&shared.barrier.poisoned);
        f(&Member {
            index,
            shared: &shared,
            next: std::cell::Cell::new(0),
        })
    };
    std::thread::scope(|s| {
        for index in 1..size {
            let one = &one;
            s.spawn(move || one(index));
        }
        one(0);
    });
}

/// An f32 buffer the members of a team write in disjoint parts and read after a [`Member::sync`].
pub(crate) struct SharedBuf<'a> {
    data: &'a [UnsafeCell<f32>],
    _owner: PhantomData<&'a mut [f32]>,
}

// SAFETY: access goes through the unsafe methods below, whose contracts (disjoint writes, reads
// only after a barrier that follows the writes) rule out data races.
unsafe impl Sync for SharedBuf<'_> {}

impl<'a> SharedBuf<'a> {
    /// Wraps `v` for the duration of a [`run`].
    pub(crate) fn new(v: &'a mut [f32]) -> Self {
        let n = v.len();
        // SAFETY: UnsafeCell<f32> has the layout of f32, and `v` is borrowed mutably for 'a.
        let data =
            unsafe { std::slice::from_raw_parts(v.as_mut_ptr() as *const UnsafeCell<f32>, n) };
        SharedBuf {
            data,
            _owner: PhantomData,
        }
    }

    /// Elements `range` to write.
    ///
    /// # Safety
    /// No other member reads or writes any element of `range` until the next [`Member::sync`].
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn part(&self, range: std::ops::Range<usize>) -> &mut [f32] {
        let cells = &self.data[range];
        // SAFETY: in bounds (indexed above); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(UnsafeCell::raw_get(cells.as_ptr()), cells.len()) }
    }

    /// Every element, to read.
    ///
    /// # Safety
    /// No member writes any element until the next [`Member::sync`].
    pub(crate) unsafe fn all(&self) -> &[f32] {
        // SAFETY: shared reads only, by the caller's contract.
        unsafe {
            std::slice::from_raw_parts(UnsafeCell::raw_get(self.data.as_ptr()), self.data.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_see_every_members_writes_and_run_each_task_once() {
        for threads in [1usize, 2, 3, 4] {
            let n = 1000;
            let mut a = vec![0f32; n];
            let mut b = vec![0f32; n];
            let members = AtomicUsize::new(0);
            let done = AtomicUsize::new(0);
            {
                let (sa, sb) = (SharedBuf::new(&mut a), SharedBuf::new(&mut b));
                run(threads, 64, |m| {
                    assert!(m.index() < threads);
                    members.fetch_add(1 << m.index(), Ordering::Relaxed);
                    for _ in 0..20 {
                        // Stage 1: `a` from the previous `b`, tasks of 10 elements.
                        m.tasks(n / 10, |t| {
                            // SAFETY: no member writes `b` in this stage; task t owns its part.
                            let prev = unsafe { sb.all()[t * 10..t * 10 + 10].to_vec() };
                            let out = unsafe { sa.part(t * 10..t * 10 + 10) };
                            for (o, p) in out.iter_mut().zip(prev) {
                                *o = p + 1.0;
                            }
                            done.fetch_add(1, Ordering::Relaxed);
                        });
                        m.sync();
                        // Stage 2: `b` from `a` reversed, so every task reads other tasks' writes.
                        m.tasks(n / 10, |t| {
                            // SAFETY: no member writes `a` in this stage; task t owns its part.
                            let all = unsafe { sa.all() };
                            let out = unsafe { sb.part(t * 10..t * 10 + 10) };
                            for (i, o) in out.iter_mut().enumerate() {
                                *o = all[n - 1 - (t * 10 + i)];
                            }
                        });
                        m.sync();
                    }
                });
            }
            // Each member ran once; each stage-1 task once in every round.
            assert_eq!(members.into_inner(), (1 << threads) - 1);
            assert_eq!(done.into_inner(), 20 * n / 10);
            assert!(
                b.iter().all(|&v| v == 20.0),
                "{threads} threads: {:?}",
                &b[..4]
            );
        }
    }

    #[test]
    fn a_panicking_member_ends_the_team_instead_of_hanging_it() {
        let r = std::panic::catch_unwind(|| {
            run(3, 1, |m| {
                if m.index() == 2 {
                    panic!("member 2 fails");
                }
                m.sync();
            })
        });
        assert!(r.is_err());
    }
}
