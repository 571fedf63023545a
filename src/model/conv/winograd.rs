//! Winograd minimal filtering F(m×m, 3×3) for stride-1 3×3 convolutions (Lavin & Gray 2016).
//!
//! An output tile of m×m pixels is computed from an (m+2)×(m+2) input tile with (m+2)²
//! multiplications per (input channel, output channel) instead of 9m²: 4× fewer for
//! F(4×4, 3×3) and 2.25× for F(2×2, 3×3). The multiplications of all tiles become (m+2)²
//! independent GEMMs, `M[ξ] = V[ξ] · U[ξ]` with V the transformed input tiles (tiles ×
//! channels) and U the transformed filters (channels × filters), run on the `gemm` crate.
//!
//! Layout: the input is copied once into a zero-padded NHWC buffer whose channel count is
//! rounded up to the 16-lane width, so that every input-transform load is one contiguous
//! 16-channel vector and no bounds checks are needed. Tiles are cut into chunks, one
//! chunk per task: transform, GEMMs and output transform of a chunk stay in cache and need
//! no synchronisation. The output transform adds the bias (and ReLU) and writes NCHW.

use super::lanes::{dispatch, Level, LANES, V16};
use super::reuse;
use candle_core::TensorId;
use rayon::prelude::*;

/// Which tile size to use for a map of `ho × wo` outputs: the one with fewer GEMM
/// multiplications in total (F(2,3) wins on 2×2 maps, F(4,3) almost everywhere else).
pub fn tile_for(ho: usize, wo: usize) -> usize {
    let cost = |m: usize| ho.div_ceil(m) * wo.div_ceil(m) * (m + 2) * (m + 2);
    if cost(4) <= cost(2) {
        4
    } else {
        2
    }
}

/// Bᵀ·d for one column or row of an input tile.
#[inline(always)]
fn input_1d<const A: usize>(d: [V16; A]) -> [V16; A] {
    let mut v = [V16::ZERO; A];
    if A == 6 {
        let t0 = d[4] - d[2].scale(4.0);
        let t1 = d[3] - d[1].scale(4.0);
        let t2 = d[4] - d[2];
        let t3 = (d[3] - d[1]).scale(2.0);
        v[0] = d[0].scale(4.0) - d[2].scale(5.0) + d[4];
        v[1] = t0 + t1;
        v[2] = t0 - t1;
        v[3] = t2 + t3;
        v[4] = t2 - t3;
        v[5] = d[1].scale(4.0) - d[3].scale(5.0) + d[5];
    } else {
        v[0] = d[0] - d[2];
        v[1] = d[1] + d[2];
        v[2] = d[2] - d[1];
        v[3] = d[1] - d[3];
    }
    v
}

/// Aᵀ·m for one column or row of a product tile.
#[inline(always)]
fn output_1d<const A: usize, const M: usize>(m: [V16; A]) -> [V16; M] {
    let mut y = [V16::ZERO; M];
    if A == 6 {
        let (a, b) = (m[1] + m[2], m[1] - m[2]);
        let (c, d) = (m[3] + m[4], m[3] - m[4]);
        y[0] = m[0] + a + c;
        y[1] = b + d.scale(2.0);
        y[2] = a + c.scale(4.0);
        y[3] = b + d.scale(8.0) + m[5];
    } else {
        y[0] = m[0] + m[1] + m[2];
        y[1] = m[1] - m[2] - m[3];
    }
    y
}

/// G (A×3) of F(m, 3), interpolation points 0, ±1, (±2,) ∞.
fn g_matrix(m: usize) -> Vec<[f64; 3]> {
    if m == 4 {
        vec![
            [1.0 / 4.0, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ]
    } else {
        vec![
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ]
    }
}

/// Sizes of one convolution.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub batch: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub pad: usize,
}

impl Geometry {
    pub fn out_hw(&self) -> (usize, usize) {
        (self.h + 2 * self.pad - 2, self.w + 2 * self.pad - 2)
    }
}

/// A raw pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// # Safety
    /// `[at, at + LANES)` is inside the buffer and no other task writes it.
    #[inline(always)]
    unsafe fn store(self, at: usize, v: V16) {
        std::ptr::copy_nonoverlapping(v.0.as_ptr(), self.0.add(at), LANES);
    }

    /// # Safety
    /// `at` is inside the buffer and no other task writes it.
    #[inline(always)]
    unsafe fn at(self, at: usize) -> *mut f32 {
        self.0.add(at)
    }
}

/// A buffer whose every element the caller writes (through [`Shared`] or as a GEMM
/// destination) before anything reads it: zero-filling tens of MB per call showed up as
/// 10% of a sweep's time.
pub(super) fn scratch(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: f32 has no invalid bit patterns, and callers write before they read.
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(n)
    };
    v
}

/// Run `f(i)` for `i in 0..n`, on rayon's pool when `parallel`.
fn for_each(n: usize, parallel: bool, f: impl Fn(usize) + Sync + Send) {
    if parallel {
        (0..n).into_par_iter().for_each(f);
    } else {
        (0..n).for_each(f);
    }
}

/// `U[ξ][c][k]` of a selection of filters (`sel.dim` 0) or channels (1) of the weights
/// whose transformed filters are `src`: the same selection of `src`, bit for bit, since
/// every filter/channel pair is transformed on its own. Padding stays zero.
fn select_filters(
    src: &[f32],
    sel: &reuse::Selection,
    g: &Geometry,
    a: usize,
    cp: usize,
    kp: usize,
) -> Vec<f32> {
    let mut u = vec![0f32; a * a * cp * kp];
    let idx = &sel.indices;
    if sel.dim == 1 {
        // Channels: whole rows of `kp` filters move.
        let cp_src = src.len() / (a * a * kp);
        for xi in 0..a * a {
            for (c, &from) in idx.iter().enumerate().take(g.c) {
                let s = (xi * cp_src + from as usize) * kp;
                let d = (xi * cp + c) * kp;
                u[d..d + kp].copy_from_slice(&src[s..s + kp]);
            }
        }
    } else {
        let kp_src = src.len() / (a * a * cp);
        for row in 0..a * a * cp {
            let (s, d) = (row * kp_src, row * kp);
            for (k, &from) in idx.iter().enumerate().take(g.k) {
                u[d + k] = src[s + from as usize];
            }
        }
    }
    u
}

/// Transformed filters `U[ξ][c][k]`, channels and filters padded to the lane width.
/// One task per 16 filters, whose weights are one contiguous block; for small maps this
/// transform costs as much as the GEMMs, so it is vectorised over the 16 filters.
fn transform_filters(weight: &[f32], g: &Geometry, m: usize, cp: usize, kp: usize) -> Vec<f32> {
    let a = m + 2;
    let gm: Vec<[f32; 3]> = g_matrix(m).iter().map(|r| r.map(|v| v as f32)).collect();
    let (c_n, k_n) = (g.c, g.k);
    // Padded channel rows (c ≥ c_n) must be zero; everything else is written below.
    let mut u = if cp > c_n {
        vec![0f32; a * a * cp * kp]
    } else {
        scratch(a * a * cp * kp)
    };
    let dst = Shared(u.as_mut_ptr());
    for_each(kp / LANES, true, |kg| {
        dispatch(
            #[inline(always)]
            || {
                for c in 0..c_n {
                    // taps[i][j] of 16 filters (zero beyond k_n).
                    let mut taps = [[V16::ZERO; 3]; 3];
                    for l in 0..LANES.min(k_n - kg * LANES) {
                        let base = ((kg * LANES + l) * c_n + c) * 9;
                        for (t, tap) in weight[base..base + 9].iter().enumerate() {
                            taps[t / 3][t % 3].0[l] = *tap;
                        }
                    }
                    // tmp = G·g (A×3), u = tmp·Gᵀ (A×A).
                    let mut tmp = [[V16::ZERO; 3]; 6];
                    for (r, grow) in gm.iter().enumerate() {
                        for j in 0..3 {
                            tmp[r][j] = taps[0][j].scale(grow[0])
                                + taps[1][j].scale(grow[1])
                                + taps[2][j].scale(grow[2]);
                        }
                    }
                    for (r, trow) in tmp.iter().enumerate().take(a) {
                        for (s, gcol) in gm.iter().enumerate() {
                            let v = trow[0].scale(gcol[0])
                                + trow[1].scale(gcol[1])
                                + trow[2].scale(gcol[2]);
                            // SAFETY: (ξ, c, kg) blocks are disjoint between tasks.
                            unsafe { dst.store(((r * a + s) * cp + c) * kp + kg * LANES, v) };
                        }
                    }
                }
            },
        );
    });
    u
}

/// Write NCHW `x` into `out`, an NHWC buffer of `hp × wp` pixels and `cp` channels, with
/// zeros around the image and in the padded channels (`out` arrives with arbitrary
/// contents: every element is written).
fn fill_padded_nhwc(x: &[f32], g: &Geometry, hp: usize, wp: usize, cp: usize, out: &mut [f32]) {
    let plane = g.h * g.w;
    out.par_chunks_mut(wp * cp)
        .enumerate()
        .for_each(|(r, row)| {
            let (b, i) = (r / hp, r % hp);
            if i < g.pad || i >= g.pad + g.h {
                row.fill(0.0);
                return;
            }
            let i = i - g.pad;
            row[..g.pad * cp].fill(0.0);
            row[(g.pad + g.w) * cp..].fill(0.0);
            let src = &x[b * g.c * plane..(b + 1) * g.c * plane];
            for j in 0..g.w {
                row[(j + g.pad) * cp + g.c..(j + g.pad + 1) * cp].fill(0.0);
            }
            // Full 16×16 (channel × column) blocks go through a register transpose.
            let (c16, w16) = (g.c / LANES * LANES, g.w / LANES * LANES);
            let fast = cfg!(target_arch = "x86_64") && super::lanes::level() == Level::Avx512;
            let (c_done, w_done) = if fast { (c16, w16) } else { (0, 0) };
            #[cfg(target_arch = "x86_64")]
            for cg in (0..c_done).step_by(LANES) {
                for j0 in (0..w_done).step_by(LANES) {
                    let block: [V16; LANES] =
                        std::array::from_fn(|l| V16::load(&src[(cg + l) * plane + i * g.w + j0..]));
                    // SAFETY: `fast` checked AVX-512F.
                    let cols = unsafe { super::lanes::transpose16(&block) };
                    for (dj, v) in cols.iter().enumerate() {
                        v.store(&mut row[(j0 + dj + g.pad) * cp + cg..]);
                    }
                }
            }
            for c in 0..g.c {
                let s = &src[c * plane + i * g.w..c * plane + (i + 1) * g.w];
                let from = if c < c_done { w_done } else { 0 };
                for (j, v) in s.iter().enumerate().skip(from) {
                    row[(j + g.pad) * cp + c] = *v;
                }
            }
        });
}

/// `y = conv3x3(x, weight) + bias` (then ReLU if `relu`), stride 1, NCHW, f32.
/// `weight_id` identifies the weight tensor for the transformed-filter cache
/// ([`reuse::filters`]); `None` transforms afresh.
pub fn conv3x3(
    x: &[f32],
    weight: &[f32],
    weight_id: Option<TensorId>,
    bias: &[f32],
    g: &Geometry,
    relu: bool,
) -> Vec<f32> {
    let (ho, wo) = g.out_hw();
    match tile_for(ho, wo) {
        4 => Plan::<4, 6>::new(g).run(x, weight, weight_id, bias, relu),
        _ => Plan::<2, 4>::new(g).run(x, weight, weight_id, bias, relu),
    }
}

/// Sizes of one Winograd convolution with output tiles of M×M (A = M + 2).
struct Plan<const M: usize, const A: usize> {
    g: Geometry,
    ho: usize,
    wo: usize,
    /// Tiles per image in y and x.
    th: usize,
    tw: usize,
    /// The padded NHWC input's height and width.
    hp: usize,
    wp: usize,
    /// Channels and filters rounded up to the lane width.
    cp: usize,
    kp: usize,
}

impl<const M: usize, const A: usize> Plan<M, A> {
    fn new(g: &Geometry) -> Self {
        let (ho, wo) = g.out_hw();
        let (th, tw) = (ho.div_ceil(M), wo.div_ceil(M));
        Self {
            g: *g,
            ho,
            wo,
            th,
            tw,
            hp: th * M + 2,
            wp: tw * M + 2,
            cp: g.c.div_ceil(LANES) * LANES,
            kp: g.k.div_ceil(LANES) * LANES,
        }
    }

    /// (image, tile row, tile column) of tile `t`.
    fn tile_pos(&self, t: usize) -> (usize, usize, usize) {
        let per = self.th * self.tw;
        (t / per, (t % per) / self.tw, t % self.tw)
    }

    fn run(
        &self,
        x: &[f32],
        weight: &[f32],
        weight_id: Option<TensorId>,
        bias: &[f32],
        relu: bool,
    ) -> Vec<f32> {
        let g = &self.g;
        let u = reuse::filters(
            weight_id,
            M,
            || transform_filters(weight, g, M, self.cp, self.kp),
            |src, sel| select_filters(src, sel, g, A, self.cp, self.kp),
        );
        let n_xp = g.batch * self.hp * self.wp * self.cp;
        reuse::with_scratch(n_xp, |xp| {
            fill_padded_nhwc(x, g, self.hp, self.wp, self.cp, xp);
            self.tiles(xp, &u, bias, relu)
        })
    }

    /// Every tile of the padded input `xp`, in chunks.
    fn tiles(&self, xp: &[f32], u: &[f32], bias: &[f32], relu: bool) -> Vec<f32> {
        let g = &self.g;
        let mut bias_p = vec![0f32; self.kp];
        bias_p[..g.k].copy_from_slice(bias);
        // Every output pixel belongs to exactly one tile.
        let mut y = scratch(g.batch * g.k * self.ho * self.wo);
        let out = Shared(y.as_mut_ptr());

        let tiles = g.batch * self.th * self.tw;
        let threads = rayon::current_num_threads().max(1);
        // A chunk's transform buffers stay around 8 MB; below ~128 tiles a chunk's GEMMs
        // get thin, so small problems run as one chunk with parallel phases instead.
        let cap = ((1usize << 21) / (A * A * self.cp.max(self.kp))).max(128);
        let chunk = if tiles >= threads * 128 {
            tiles.div_ceil(threads).min(cap)
        } else {
            tiles.min(cap)
        };
        let n_chunks = tiles.div_ceil(chunk);
        let work = |ci: usize, parallel: bool| {
            let t0 = ci * chunk;
            self.chunk(
                t0,
                chunk.min(tiles - t0),
                xp,
                u,
                &bias_p,
                relu,
                out,
                parallel,
            )
        };
        if n_chunks >= threads {
            (0..n_chunks).into_par_iter().for_each(|ci| work(ci, false));
        } else {
            (0..n_chunks).for_each(|ci| work(ci, true));
        }
        y
    }

    /// Input transform, GEMMs and output transform of tiles `t0..t0 + tn`; with
    /// `parallel`, each phase is split over rayon's pool (tiles, then ξ, then tiles).
    #[allow(clippy::too_many_arguments)]
    fn chunk(
        &self,
        t0: usize,
        tn: usize,
        xp: &[f32],
        u: &[f32],
        bias: &[f32],
        relu: bool,
        out: Shared,
        parallel: bool,
    ) {
        let (cp, kp) = (self.cp, self.kp);
        reuse::with_scratch(A * A * tn * (cp + kp), |buf| {
            // The transform buffers: V (A²·tn·cp) and the GEMM products (A²·tn·kp).
            let (v, prod) = buf.split_at_mut(A * A * tn * cp);
            let vs = Shared(v.as_mut_ptr());
            for_each(tn, parallel, |tl| {
                dispatch(
                    #[inline(always)]
                    || self.input_tile(t0 + tl, tl, tn, xp, vs),
                )
            });
            let ps = Shared(prod.as_mut_ptr());
            let v: &[f32] = v;
            for_each(A * A, parallel, |xi| {
                // prod[ξ] (tn × kp) = V[ξ] (tn × cp) · U[ξ] (cp × kp), computed as its
                // transpose (kp × tn) = U[ξ]ᵀ · V[ξ]ᵀ on the same memory: the big operand U
                // then is a column-major lhs, which `gemm` reads without repacking it for every
                // few tiles.
                // SAFETY: every pointer covers its full matrix with the strides given, and each
                // task writes only its own prod[ξ].
                unsafe {
                    super::matmul(
                        kp,
                        tn,
                        cp,
                        (ps.at(xi * tn * kp), kp as isize, 1),
                        (u.as_ptr().add(xi * cp * kp), kp as isize, 1),
                        (v.as_ptr().add(xi * tn * cp), cp as isize, 1),
                    )
                }
            });
            let prod: &[f32] = prod;
            for_each(tn, parallel, |tl| {
                dispatch(
                    #[inline(always)]
                    || self.output_tile(t0 + tl, tl, tn, prod, bias, relu, out),
                )
            });
        })
    }

    /// V[ξ][tl][·] of tile `t` (local index `tl` of `tn`), 16 channels at a time.
    #[inline(always)]
    fn input_tile(&self, t: usize, tl: usize, tn: usize, xp: &[f32], v: Shared) {
        let (b, ty, tx) = self.tile_pos(t);
        let (cp, wp) = (self.cp, self.wp);
        for cg in 0..cp / LANES {
            let mut d = [[V16::ZERO; A]; A];
            for (i, drow) in d.iter_mut().enumerate() {
                let row = ((b * self.hp + ty * M + i) * wp + tx * M) * cp + cg * LANES;
                for (j, dv) in drow.iter_mut().enumerate() {
                    *dv = V16::load(&xp[row + j * cp..]);
                }
            }
            // Columns, then rows.
            let mut t = [[V16::ZERO; A]; A];
            for j in 0..A {
                let col = input_1d::<A>(std::array::from_fn(|i| d[i][j]));
                for i in 0..A {
                    t[i][j] = col[i];
                }
            }
            for (i, trow) in t.iter().enumerate() {
                for (j, rv) in input_1d::<A>(*trow).iter().enumerate() {
                    // SAFETY: tile tl's rows of V are written by this task only.
                    unsafe { v.store(((i * A + j) * tn + tl) * cp + cg * LANES, *rv) };
                }
            }
        }
    }

    /// Output transform of tile `t`, plus bias (and ReLU), scattered into NCHW `out`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn output_tile(
        &self,
        t: usize,
        tl: usize,
        tn: usize,
        prod: &[f32],
        bias: &[f32],
        relu: bool,
        out: Shared,
    ) {
        let (b, ty, tx) = self.tile_pos(t);
        let (g, kp) = (&self.g, self.kp);
        let rows = M.min(self.ho - ty * M);
        let cols = M.min(self.wo - tx * M);
        for kg in 0..kp / LANES {
            let mut tmp = [[V16::ZERO; A]; M];
            for j in 0..A {
                let col = output_1d::<A, M>(std::array::from_fn(|i| {
                    V16::load(&prod[((i * A + j) * tn + tl) * kp + kg * LANES..])
                }));
                for i in 0..M {
                    tmp[i][j] = col[i];
                }
            }
            let bv = V16::load(&bias[kg * LANES..]);
            let lanes = LANES.min(g.k - kg * LANES);
            // y[i][j]: the tile's pixels, 16 filters per vector.
            let mut y = [[V16::ZERO; M]; M];
            for (i, trow) in tmp.iter().enumerate() {
                for (j, yv) in output_1d::<A, M>(*trow).iter().enumerate() {
                    y[i][j] = if relu { (*yv + bv).max0() } else { *yv + bv };
                }
            }
            let at = |k: usize, oy: usize| ((b * g.k + k) * self.ho + oy) * self.wo + tx * M;
            #[cfg(target_arch = "x86_64")]
            if M == 4 && rows == 4 && cols == 4 && super::lanes::level() == Level::Avx512 {
                // A full 4×4 tile: transpose to 16 pixels per filter and write each tile
                // row as 4 contiguous floats (scattered scalar stores cost more than the
                // transform itself on 64-channel layers).
                let flat: [V16; LANES] = std::array::from_fn(|p| y[p / 4][p % 4]);
                // SAFETY: level() checked AVX-512F.
                let per_k = unsafe { super::lanes::transpose16(&flat) };
                for (l, px) in per_k.iter().enumerate().take(lanes) {
                    for i in 0..4 {
                        // SAFETY: row i of filter k's tile is inside y and only this
                        // tile's task writes it.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                px.0[i * 4..].as_ptr(),
                                out.at(at(kg * LANES + l, ty * M + i)),
                                4,
                            )
                        };
                    }
                }
                continue;
            }
            for (i, yrow) in y.iter().enumerate().take(rows) {
                for (j, yv) in yrow.iter().enumerate().take(cols) {
                    for (l, val) in yv.0.iter().enumerate().take(lanes) {
                        // SAFETY: (b, k, oy, ox) is inside y, and only this tile's task
                        // writes it.
                        unsafe { *out.at(at(kg * LANES + l, ty * M + i) + j) = *val };
                    }
                }
            }
        }
    }
}
