//! `lrprune bench`: measured speed facts, written as a Markdown report.
//!
//! Timings are medians over repeats after a warm-up, on whatever machine runs it; the report
//! records the machine's core count so figures are read in context.

use crate::lrp::composite;
use crate::lrp::filters::filter_relevance;
use crate::model::{conv, vgg, Network};
use crate::runner;
use crate::spec::RunConfig;
use anyhow::Result;
use candle_core::{Device, Tensor};
use std::fmt::Write;
use std::time::Instant;

/// Median wall time of `f` in seconds over `reps` runs after one warm-up.
pub fn time<T>(reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    f()?;
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f().map(|_| s.elapsed().as_secs_f64())
        })
        .collect::<Result<_>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// GFLOP/s of Candle's conv2d and of lrprune's kernels (bias added, no ReLU) on each VGG16
/// layer shape at `size`² with `batch` images.
fn conv_table(
    out: &mut String,
    size: usize,
    batch: usize,
    device: &Device,
    reps: usize,
) -> Result<()> {
    let cfg = vgg::config("vgg16").expect("vgg16");
    writeln!(
        out,
        "\n### VGG16 conv layers at {size}×{size}, batch {batch}\n"
    )?;
    writeln!(
        out,
        "| layer | in→out | map | GFLOP | kernel | Candle ms | lrprune ms | Candle GFLOP/s | lrprune GFLOP/s |\n|---|---|---|---|---|---|---|---|---|"
    )?;
    let (mut in_c, mut s, mut k) = (3, size, 0);
    let (mut total_flop, mut total_c, mut total_l) = (0.0, 0.0, 0.0);
    for item in cfg {
        let Some(out_c) = item else {
            s /= 2;
            continue;
        };
        let x = Tensor::randn(0f32, 1.0, (batch, in_c, s, s), device)?.relu()?;
        let w = Tensor::randn(0f32, 0.05, (out_c, in_c, 3, 3), device)?;
        let b = Tensor::randn(0f32, 0.05, out_c, device)?;
        let candle = time(reps, || {
            let y = x.conv2d(&w, 1, 1, 1, 1)?;
            Ok(y.broadcast_add(&b.reshape((1, out_c, 1, 1))?)?)
        })?;
        let ours = time(reps, || Ok(conv::conv2d(&x, &w, Some(&b), 1, 1, false)?))?;
        let kernel = conv::kernel_for(&x, &w, 1);
        let flop = 2.0 * (batch * out_c * in_c * 9 * s * s) as f64;
        total_flop += flop;
        total_c += candle;
        total_l += ours;
        writeln!(
            out,
            "| conv{} | {in_c}→{out_c} | {s}² | {:.2} | {kernel:?} | {:.1} | {:.1} | {:.1} | {:.1} |",
            k + 1,
            flop / 1e9,
            candle * 1e3,
            ours * 1e3,
            flop / candle / 1e9,
            flop / ours / 1e9
        )?;
        in_c = out_c;
        k += 1;
    }
    writeln!(
        out,
        "| **all** | | | {:.2} | | {:.1} | {:.1} | {:.1} | **{:.1}** |",
        total_flop / 1e9,
        total_c * 1e3,
        total_l * 1e3,
        total_flop / total_c / 1e9,
        total_flop / total_l / 1e9
    )?;
    Ok(())
}

/// One relevance pass over the reference set vs one forward pass of the same batch.
fn lrp_ratio(out: &mut String, cfg: &RunConfig, device: &Device, reps: usize) -> Result<()> {
    let task = runner::prepare_task(cfg, device)?;
    let refset = &task.data.train;
    let n = refset.labels.len();
    let bs = cfg.data.batch_size;
    let fwd = time(reps, || {
        Ok(
            Network::batched(&refset.images, bs, |x| task.net.forward(x))?
                .sum_all()?
                .to_scalar::<f32>()?,
        )
    })?;
    let comp = composite::by_name("epsilon-plus", cfg.model.preprocess, device)?;
    let rel = time(reps, || {
        filter_relevance(&task.net, refset, &comp, task.data.n_classes(), bs, None)
    })?;
    writeln!(out, "\n### LRP relevance pass vs forward pass\n")?;
    writeln!(
        out,
        "VGG16 (ImageNet weights) + trained head, {n} reference images (Fashion-MNIST, {}²), batch {bs}, composite `epsilon-plus`, per-class per-filter relevance:\n",
        cfg.model.input_size
    )?;
    writeln!(out, "| pass | s |\n|---|---|\n| forward | {fwd:.3} |\n| relevance (forward + reverse) | {rel:.3} |\n")?;
    writeln!(
        out,
        "One relevance pass costs **{:.1}×** a forward pass of the same batch.",
        rel / fwd
    )?;
    Ok(())
}

/// Run the benchmarks and return the report.
pub fn run(cfg: &RunConfig, device: &Device, reps: usize) -> Result<String> {
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    writeln!(out, "# Performance\n")?;
    writeln!(out, "Measured by `lrprune bench` ({cores} cores, {device:?}, median of {reps} after a warm-up). Regenerate: `cargo run --release -- bench --out docs/performance.md`.")?;
    lrp_ratio(&mut out, cfg, device, reps)?;
    conv_table(&mut out, 32, 64, device, reps)?;
    conv_table(&mut out, 224, 8, device, reps.min(3))?;
    Ok(out)
}
