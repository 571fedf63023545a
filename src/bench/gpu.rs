//! `lrprune bench --device cuda`: the GPU section of docs/performance.md.
//!
//! Conv forward per VGG16 layer at 224² through lrprune's conv (on CUDA: Candle's
//! `conv2d`, cuDNN with the `cudnn` feature, plus the bias), next to PyTorch's `F.conv2d` on
//! the same GPU at the same precision (`scripts/torch_reference.py conv --device cuda`).
//! Every timing synchronises the device, so it is the kernels' time, not their launch.

use super::{child, time};
use crate::model::arch::vgg;
use crate::model::conv;
use crate::model::precision::Precision;
use anyhow::Result;
use candle_core::{Device, Tensor};
use std::fmt::Write;
use std::time::Instant;

/// Where the GPU section starts and ends in docs/performance.md (after the kept marker, so
/// that a CPU `bench --out` keeps it and a GPU one replaces it).
pub const START: &str = "<!-- lrprune bench --device cuda: start -->";
pub const END: &str = "<!-- lrprune bench --device cuda: end -->";

/// What one GPU bench measures.
pub struct GpuOptions<'a> {
    pub precision: Precision,
    pub size: usize,
    pub batch: usize,
    pub reps: usize,
    /// Run `scripts/torch_reference.py conv --device cuda` for the ratio.
    pub torch: Option<&'a std::path::Path>,
}

/// The section, in Markdown, between [`START`] and [`END`].
pub fn run(device: &Device, o: &GpuOptions) -> Result<String> {
    let torch = match o.torch {
        Some(script) => {
            eprintln!("bench: PyTorch conv layers on the GPU…");
            let sizes = format!("{}x{}", o.size, o.batch);
            let args = [
                "conv",
                "--device",
                "cuda",
                "--precision",
                o.precision.name(),
                "--sizes",
                &sizes,
                "--reps",
                &o.reps.to_string(),
            ];
            Some(child::torch(script, &args)?.1)
        }
        None => None,
    };
    let mut out = String::new();
    writeln!(out, "{START}\n")?;
    let gpu = torch
        .as_ref()
        .and_then(|t| t["gpu"].as_str().map(str::to_string))
        .unwrap_or_else(|| "an NVIDIA GPU".into());
    writeln!(
        out,
        "## GPU: conv per VGG16 layer, {} ({})\n",
        gpu,
        o.precision.name()
    )?;
    let torch_v = torch.as_ref().map_or("not run".into(), |t| {
        t["torch_version"].as_str().unwrap_or("?").to_string()
    });
    let algo = match std::env::var("LRPRUNE_CUDNN_ALGO").as_deref() {
        Ok("find") => "timed once per shape (`LRPRUNE_CUDNN_ALGO=find`)",
        _ => "cuDNN's first heuristic choice (the default)",
    };
    let api = match std::env::var("LRPRUNE_CUDNN_API").as_deref() {
        Ok("legacy") => "cuDNN's legacy API (`LRPRUNE_CUDNN_API=legacy`)",
        _ => "cuDNN's graph API (`src/model/conv/cudnn_graph.rs`)",
    };
    writeln!(out, "Measured by `lrprune bench --device cuda --precision {}` (binary from `scripts/build_cuda.sh`: {api}, kernel: {algo}; kernels ahead of time). {}² input, batch {}, bias added, medians of {} after a warm-up, the device synchronised after every call. PyTorch {torch_v} runs `F.conv2d` on the same GPU (its defaults: no cuDNN benchmarking) with cuDNN's TF32 switched to match. × PyTorch = PyTorch time / lrprune time.\n", o.precision.name(), o.size, o.batch, o.reps)?;
    writeln!(out, "| layer | in→out | map | GFLOP | PyTorch ms | lrprune ms | PyTorch TFLOP/s | lrprune TFLOP/s | × PyTorch |\n|---|---|---|---|---|---|---|---|---|")?;
    let layers = torch
        .as_ref()
        .and_then(|t| t["tables"][0]["layers"].as_array().cloned());
    let cfg = vgg::config("vgg16").expect("vgg16");
    let (mut cin, mut s, mut k) = (3, o.size, 0);
    let (mut total, mut total_torch, mut flop) = (0.0, 0.0, 0.0);
    let mut first_call = None;
    for cout in cfg {
        let Some(cout) = cout else {
            s /= 2;
            continue;
        };
        let x = Tensor::randn(0f32, 1.0, (o.batch, cin, s, s), device)?;
        let w = Tensor::randn(0f32, 0.05, (cout, cin, 3, 3), device)?;
        let b = Tensor::randn(0f32, 0.05, cout, device)?;
        let call = || -> Result<()> {
            conv::conv2d(&x, &w, Some(&b), 1, 1, false)?;
            device.synchronize()?;
            Ok(())
        };
        if first_call.is_none() {
            let t = Instant::now();
            call()?;
            first_call = Some(t.elapsed().as_secs_f64());
        }
        let secs = time(o.reps, call)?;
        let torch_s = layers
            .as_ref()
            .and_then(|l| l.get(k)?["ms"].as_f64())
            .map(|ms| ms / 1e3);
        let g = 2.0 * (o.batch * cout * cin * 9 * s * s) as f64 / 1e9;
        k += 1;
        total += secs;
        flop += g;
        total_torch += torch_s.unwrap_or(f64::NAN);
        row(
            &mut out,
            &format!("conv{k}"),
            (cin, cout, s),
            g,
            torch_s,
            secs,
        )?;
        cin = cout;
    }
    let t = (!total_torch.is_nan()).then_some(total_torch);
    row(&mut out, "**all**", (0, 0, 0), flop, t, total)?;
    if let Some(t) = t {
        writeln!(
            out,
            "\nOver the 13 layers lrprune's conv runs at **{:.2}×** PyTorch's speed on this GPU ({}).",
            t / total,
            o.precision.name()
        )?;
    }
    writeln!(
        out,
        "\nThe first conv call of the process (cuDNN and kernel modules loading) took {:.2} s.",
        first_call.unwrap_or(0.0)
    )?;
    #[cfg(feature = "cudnn")]
    {
        let chosen = conv::cudnn::chosen();
        if !chosen.is_empty() {
            writeln!(
                out,
                "\nKernels, one line per distinct shape (input · filters):\n"
            )?;
            for c in chosen {
                writeln!(out, "- {c}")?;
            }
        }
    }
    writeln!(out, "\n{END}")?;
    Ok(out)
}

/// One table row; `shape` (0, 0, 0) leaves the shape columns empty (totals).
fn row(
    out: &mut String,
    name: &str,
    (cin, cout, map): (usize, usize, usize),
    gflop: f64,
    torch: Option<f64>,
    ours: f64,
) -> Result<()> {
    let ms = |v: f64| format!("{:.2}", v * 1e3);
    let shape = if cout == 0 {
        (String::new(), String::new())
    } else {
        (format!("{cin}→{cout}"), format!("{map}²"))
    };
    writeln!(
        out,
        "| {name} | {} | {} | {gflop:.1} | {} | {} | {} | {:.1} | {} |",
        shape.0,
        shape.1,
        torch.map_or("–".into(), ms),
        ms(ours),
        torch.map_or("–".into(), |t| format!("{:.1}", gflop / t / 1e3)),
        gflop / ours / 1e3,
        torch.map_or("–".into(), |t| format!("{:.2}×", t / ours)),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splice(text: &str, section: &str) -> String {
        super::super::splice(text, section, START, END)
    }

    #[test]
    fn splice_replaces_the_section_once() {
        let first = splice("# Performance\n\nCPU.", &format!("{START}\nold\n{END}"));
        assert!(first.ends_with(&format!("{START}\nold\n{END}\n")));
        let second = splice(&first, &format!("{START}\nnew\n{END}"));
        assert!(second.contains("new") && !second.contains("old"));
        assert_eq!(second.matches(START).count(), 1);
        assert!(second.starts_with("# Performance\n\nCPU."));
    }
}
