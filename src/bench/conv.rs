//! Conv forward throughput per VGG16 layer shape: lrprune's kernels next to Candle's
//! `conv2d` and PyTorch's `F.conv2d` on the same shapes.

use super::time;
use crate::model::arch::vgg;
use crate::model::conv;
use anyhow::Result;
use candle_core::{Device, Tensor};
use std::cell::Cell;
use std::fmt::Write;

/// One layer's measurements (seconds).
pub struct Row {
    pub name: String,
    pub cin: usize,
    pub cout: usize,
    pub map: usize,
    pub gflop: f64,
    pub kernel: conv::Kernel,
    pub candle: f64,
    /// Same weight tensor every call: the transformed filters are reused, as when a sweep
    /// evaluates one network batch after batch.
    pub warm: f64,
    /// New weights every call: the filter transform is paid each time.
    pub cold: f64,
    pub torch: Option<f64>,
}

/// Measure the 13 VGG16 conv shapes at `size`² with `batch` images (bias added, no ReLU:
/// what `F.conv2d` computes).
pub fn measure(
    size: usize,
    batch: usize,
    reps: usize,
    torch: Option<&serde_json::Value>,
) -> Result<Vec<Row>> {
    let device = Device::Cpu;
    let cfg = vgg::config("vgg16").expect("vgg16");
    let (mut cin, mut s) = (3, size);
    let mut rows = Vec::new();
    for out in cfg {
        let Some(cout) = out else {
            s /= 2;
            continue;
        };
        let x = Tensor::randn(0f32, 1.0, (batch, cin, s, s), &device)?;
        let weights: Vec<Tensor> = (0..reps + 2)
            .map(|_| Tensor::randn(0f32, 0.05, (cout, cin, 3, 3), &device))
            .collect::<candle_core::Result<_>>()?;
        let b = Tensor::randn(0f32, 0.05, cout, &device)?;
        let w = &weights[0];
        let candle = time(reps, || {
            let y = x.conv2d(w, 1, 1, 1, 1)?;
            Ok(y.broadcast_add(&b.reshape((1, cout, 1, 1))?)?)
        })?;
        let warm = time(reps, || Ok(conv::conv2d(&x, w, Some(&b), 1, 1, false)?))?;
        let next = Cell::new(0);
        let cold = time(reps, || {
            let i = next.replace(next.get() + 1);
            Ok(conv::conv2d(
                &x,
                &weights[i % weights.len()],
                Some(&b),
                1,
                1,
                false,
            )?)
        })?;
        let k = rows.len();
        let torch_s = torch
            .and_then(|t| t["layers"][k]["ms"].as_f64())
            .map(|ms| ms / 1e3);
        rows.push(Row {
            name: format!("conv{}", k + 1),
            cin,
            cout,
            map: s,
            gflop: 2.0 * (batch * cout * cin * 9 * s * s) as f64 / 1e9,
            kernel: conv::kernel_for(&x, w, 1),
            candle,
            warm,
            cold,
            torch: torch_s,
        });
        cin = cout;
    }
    Ok(rows)
}

/// The table, with totals and the ratio to PyTorch (time of PyTorch / time of lrprune).
pub fn table(out: &mut String, size: usize, batch: usize, rows: &[Row]) -> Result<()> {
    writeln!(out, "\n#### {size}×{size}, batch {batch}\n")?;
    writeln!(
        out,
        "| layer | in→out | map | GFLOP | kernel | PyTorch ms | Candle ms | lrprune ms | lrprune cold ms | PyTorch GFLOP/s | lrprune GFLOP/s | × PyTorch | × PyTorch (cold) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )?;
    let ms = |v: f64| format!("{:.1}", v * 1e3);
    let opt_ms = |v: Option<f64>| v.map_or("–".into(), ms);
    let ratio = |t: Option<f64>, ours: f64| t.map_or("–".into(), |t| format!("{:.2}×", t / ours));
    let rate = |g: f64, t: Option<f64>| t.map_or("–".into(), |t| format!("{:.0}", g / t));
    for r in rows {
        writeln!(
            out,
            "| {} | {}→{} | {}² | {:.2} | {:?} | {} | {} | {} | {} | {} | {:.0} | {} | {} |",
            r.name,
            r.cin,
            r.cout,
            r.map,
            r.gflop,
            r.kernel,
            opt_ms(r.torch),
            ms(r.candle),
            ms(r.warm),
            ms(r.cold),
            rate(r.gflop, r.torch),
            r.gflop / r.warm,
            ratio(r.torch, r.warm),
            ratio(r.torch, r.cold),
        )?;
    }
    let sum = |f: &dyn Fn(&Row) -> f64| rows.iter().map(f).sum::<f64>();
    let (g, c, w, cold) = (
        sum(&|r| r.gflop),
        sum(&|r| r.candle),
        sum(&|r| r.warm),
        sum(&|r| r.cold),
    );
    let torch: Option<f64> = rows.iter().map(|r| r.torch).sum();
    writeln!(
        out,
        "| **all** | | | {g:.2} | | {} | {} | {} | {} | {} | **{:.0}** | **{}** | **{}** |",
        opt_ms(torch),
        ms(c),
        ms(w),
        ms(cold),
        rate(g, torch),
        g / w,
        ratio(torch, w),
        ratio(torch, cold),
    )?;
    Ok(())
}

/// The slowest per-layer ratio to PyTorch (warm, cold), if PyTorch was measured.
pub fn worst_ratio(rows: &[Row]) -> Option<(f64, f64)> {
    let w = rows
        .iter()
        .map(|r| r.torch.map(|t| t / r.warm))
        .collect::<Option<Vec<_>>>()?;
    let c = rows
        .iter()
        .map(|r| r.torch.map(|t| t / r.cold))
        .collect::<Option<Vec<_>>>()?;
    Some((
        w.into_iter().fold(f64::INFINITY, f64::min),
        c.into_iter().fold(f64::INFINITY, f64::min),
    ))
}
