//! The one random-number generator of training and negatives: ChaCha8, seeded, with a state
//! that checkpoints can save and restore exactly.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A seeded ChaCha8 generator whose full state can be saved.
#[derive(Clone, Debug)]
pub struct TrainRng(ChaCha8Rng);

/// Everything needed to continue a [`TrainRng`] exactly where it stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte ChaCha key, hex.
    pub seed: String,
    pub stream: u64,
    /// Position in the key stream (in 32-bit words), decimal (u128 does not fit JSON numbers).
    pub word_pos: String,
}

impl TrainRng {
    pub fn seed_from_u64(seed: u64) -> Self {
        TrainRng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A generator for one item (an image, a record), independent of the order items are visited.
    pub fn for_item(seed: u64, key: &str) -> Self {
        // FNV-1a of the key, mixed into the seed.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in key.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        Self::seed_from_u64(seed ^ h.rotate_left(17))
    }

    pub fn state(&self) -> RngState {
        let seed = self.0.get_seed();
        RngState {
            seed: seed.iter().map(|b| format!("{b:02x}")).collect(),
            stream: self.0.get_stream(),
            word_pos: self.0.get_word_pos().to_string(),
        }
    }

    pub fn from_state(s: &RngState) -> Option<Self> {
        if s.seed.len() != 64 {
            return None;
        }
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s.seed[2 * i..2 * i + 2], 16).ok()?;
        }
        let mut r = ChaCha8Rng::from_seed(seed);
        r.set_stream(s.stream);
        r.set_word_pos(s.word_pos.parse().ok()?);
        Some(TrainRng(r))
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0.random::<f64>()
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        self.0.random_range(0..n.max(1))
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_continues_exactly() {
        let mut a = TrainRng::seed_from_u64(7);
        for _ in 0..13 {
            a.normal();
        }
        let s = a.state();
        let json = serde_json::to_string(&s).unwrap();
        let mut b = TrainRng::from_state(&serde_json::from_str(&json).unwrap()).unwrap();
        for _ in 0..50 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(
            TrainRng::for_item(1, "a").next_u64(),
            TrainRng::for_item(1, "b").next_u64()
        );
    }
}
