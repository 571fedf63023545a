//! What lrprune's own CPU ops (conv, max-pool, the fused LRP steps) share: when they may
//! run, and the raw data they run on. Everything else goes through Candle's ops, which keeps
//! CUDA on Candle's kernels and gradients working.

use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor};

/// Whether lrprune's CPU kernels may take these operands: all on the CPU, f32, and none on
/// an autograd tape (the Taylor criterion's probes need Candle's differentiable ops).
pub fn applies(operands: &[&Tensor]) -> bool {
    operands
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op())
}

/// The contiguous f32 data of a CPU tensor; `what` names the operand in the error.
pub fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("lrprune CPU op: {what} must be f32");
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("lrprune CPU op: {what} must be contiguous"),
    }
}

/// `f` on the data of `t`, a CPU f32 tensor (made contiguous first); `what` names it in
/// the error.
pub fn with_f32<T>(t: &Tensor, what: &str, f: impl FnOnce(&[f32]) -> Result<T>) -> Result<T> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("lrprune CPU op: {what} must be on the CPU");
    };
    f(f32_slice(cpu, layout, what)?)
}
