//! A 16-wide f32 lane vector for the Winograd transforms, plus runtime CPU-feature dispatch.
//!
//! The transforms are written once over [`V16`] with plain `+ − ×`; compiled inside a
//! `#[target_feature]` function, each `V16` op becomes one AVX-512 or two AVX2 instructions.
//! The build targets baseline x86-64, so the wide paths are chosen at run time: a binary
//! built here still runs (slower) on a CPU without AVX2.

use std::ops::{Add, Mul, Sub};

pub const LANES: usize = 16;

#[derive(Clone, Copy)]
#[repr(align(64))]
pub struct V16(pub [f32; LANES]);

impl V16 {
    pub const ZERO: V16 = V16([0.0; LANES]);

    #[inline(always)]
    pub fn load(s: &[f32]) -> V16 {
        let mut v = [0.0; LANES];
        v.copy_from_slice(&s[..LANES]);
        V16(v)
    }

    #[inline(always)]
    pub fn store(self, d: &mut [f32]) {
        d[..LANES].copy_from_slice(&self.0);
    }

    #[inline(always)]
    pub fn scale(self, k: f32) -> V16 {
        let mut o = self.0;
        for v in &mut o {
            *v *= k;
        }
        V16(o)
    }

    #[inline(always)]
    pub fn max0(self) -> V16 {
        let mut o = self.0;
        for v in &mut o {
            *v = v.max(0.0);
        }
        V16(o)
    }
}

macro_rules! lane_op {
    ($tr:ident, $f:ident, $op:tt) => {
        impl $tr for V16 {
            type Output = V16;
            #[inline(always)]
            fn $f(self, r: V16) -> V16 {
                let mut o = self.0;
                for (a, b) in o.iter_mut().zip(r.0) {
                    *a $op b;
                }
                V16(o)
            }
        }
    };
}
lane_op!(Add, add, +=);
lane_op!(Sub, sub, -=);
lane_op!(Mul, mul, *=);

/// SIMD levels, ordered: a level implies the ones below it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Level {
    Baseline,
    Avx2,
    Avx512,
}

/// The widest level this CPU offers, detected once. `LRPRUNE_SIMD=avx2|baseline` caps it.
pub fn detected() -> Level {
    use std::sync::OnceLock;
    static L: OnceLock<Level> = OnceLock::new();
    *L.get_or_init(|| {
        let cpu = cpu_level();
        match std::env::var("LRPRUNE_SIMD").as_deref() {
            Ok("baseline") => Level::Baseline,
            Ok("avx2") => cpu.min(Level::Avx2),
            _ => cpu,
        }
    })
}

fn cpu_level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// 0 = no cap, else `Level as u8 + 1`.
static CAP: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Cap the level used from now on (never above what the CPU has); `None` lifts the cap.
/// For tests that compare the SIMD paths with each other.
pub fn cap_level(cap: Option<Level>) {
    CAP.store(
        cap.map_or(0, |l| l as u8 + 1),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// The level the kernels use now.
pub fn level() -> Level {
    let d = detected();
    match CAP.load(std::sync::atomic::Ordering::Relaxed) {
        1 => Level::Baseline,
        2 => d.min(Level::Avx2),
        _ => d,
    }
}

/// Call `f` compiled for the widest SIMD level available (`f` must be `#[inline(always)]`
/// code for the specialisation to happen).
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        match level() {
            // SAFETY: `level()` checked that the CPU supports these features.
            Level::Avx512 => unsafe { avx512(f) },
            Level::Avx2 => unsafe { avx2(f) },
            Level::Baseline => f(),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    f()
}

/// Transpose a 16×16 block held as 16 row vectors, with AVX-512 shuffles (64 instructions
/// instead of 256 scalar moves). Used to turn "16 filters per vector" into "16 pixels per
/// vector" so results can be written with contiguous stores.
///
/// # Safety
/// The CPU must support AVX-512F (`level() == Level::Avx512`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn transpose16(r: &[V16; LANES]) -> [V16; LANES] {
    use std::arch::x86_64::*;
    let row = |i: usize| _mm512_load_ps(r[i].0.as_ptr());
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let (r0, r1, r2, r3) = (row(4 * g), row(4 * g + 1), row(4 * g + 2), row(4 * g + 3));
        let t0 = _mm512_castps_pd(_mm512_unpacklo_ps(r0, r1));
        let t1 = _mm512_castps_pd(_mm512_unpackhi_ps(r0, r1));
        let t2 = _mm512_castps_pd(_mm512_unpacklo_ps(r2, r3));
        let t3 = _mm512_castps_pd(_mm512_unpackhi_ps(r2, r3));
        // u[4g + j], 128-bit lane q: rows 4g..4g+3 at column 4q + j.
        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    let mut out = [V16::ZERO; LANES];
    for j in 0..4 {
        let w0 = _mm512_shuffle_f32x4::<0x44>(u[j], u[4 + j]);
        let w1 = _mm512_shuffle_f32x4::<0xEE>(u[j], u[4 + j]);
        let w2 = _mm512_shuffle_f32x4::<0x44>(u[8 + j], u[12 + j]);
        let w3 = _mm512_shuffle_f32x4::<0xEE>(u[8 + j], u[12 + j]);
        // Column c = 4q + j gathers lane q of u[j], u[4+j], u[8+j], u[12+j].
        _mm512_store_ps(out[j].0.as_mut_ptr(), _mm512_shuffle_f32x4::<0x88>(w0, w2));
        _mm512_store_ps(
            out[4 + j].0.as_mut_ptr(),
            _mm512_shuffle_f32x4::<0xDD>(w0, w2),
        );
        _mm512_store_ps(
            out[8 + j].0.as_mut_ptr(),
            _mm512_shuffle_f32x4::<0x88>(w1, w3),
        );
        _mm512_store_ps(
            out[12 + j].0.as_mut_ptr(),
            _mm512_shuffle_f32x4::<0xDD>(w1, w3),
        );
    }
    out
}

/// Portable [`transpose16`], for tests and CPUs without AVX-512.
pub fn transpose16_scalar(r: &[V16; LANES]) -> [V16; LANES] {
    let mut out = [V16::ZERO; LANES];
    for (i, row) in r.iter().enumerate() {
        for (j, v) in row.0.iter().enumerate() {
            out[j].0[i] = *v;
        }
    }
    out
}
