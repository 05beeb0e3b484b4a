//! Seeded randomness for the property tests: a run prints its seed, and `EGRESS_SEED=N` replays
//! it.

/// The seed of a run: `$EGRESS_SEED`, or the clock. Prints it (`what: EGRESS_SEED=N`).
pub fn seed(what: &str) -> u64 {
    let seed = match std::env::var("EGRESS_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|e| panic!("EGRESS_SEED={s:?}: {e}")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos() as u64,
    };
    eprintln!("{what}: EGRESS_SEED={seed}");
    seed
}

/// splitmix64: a small seeded generator.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// One of `of`, which is not empty.
    pub fn pick<T: Clone>(&mut self, of: &[T]) -> T {
        of[self.below(of.len())].clone()
    }
}
