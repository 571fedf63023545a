//! How the GPU multiplies f32 tensors: strict IEEE fp32 (the default, and what the CPU
//! computes, so CPU and GPU sweeps stay comparable) or TF32 tensor cores (10-bit mantissa
//! inputs, fp32 accumulation; about 4× the convolution throughput on an H100).
//!
//! The choice is process-wide: cuBLAS and cuDNN read `NVIDIA_TF32_OVERRIDE` when their
//! handles are created, so [`Precision::apply`] must run before the CUDA device is made.
//! A run records its precision in `runs.parquet` (docs/results-format.md).

use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    Fp32,
    Tf32,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
        }
    }

    /// Set the process up for this precision on the device about to be created.
    pub fn apply(self, cuda: bool) -> Result<()> {
        match (self, cuda) {
            (Precision::Fp32, false) => Ok(()),
            (Precision::Tf32, false) => bail!(
                "--precision tf32: TF32 exists on NVIDIA GPUs only; the CPU computes in fp32 (fix: --device cuda, or --precision fp32)"
            ),
            (Precision::Fp32, true) => {
                // cuDNN's default math lets FP32 convolutions use TF32 tensor cores on
                // Ampere and later; the override turns that off in cuDNN and cuBLAS alike.
                // SAFETY of set_var: called from `main` before any thread is started.
                std::env::set_var("NVIDIA_TF32_OVERRIDE", "0");
                candle_core::cuda::set_gemm_reduced_precision_f32(false);
                #[cfg(feature = "cudnn")]
                super::conv::cudnn::set_tf32(false);
                Ok(())
            }
            (Precision::Tf32, true) => {
                if std::env::var("NVIDIA_TF32_OVERRIDE").as_deref() == Ok("0") {
                    bail!("--precision tf32: NVIDIA_TF32_OVERRIDE=0 in the environment forbids TF32 (fix: unset it)");
                }
                candle_core::cuda::set_gemm_reduced_precision_f32(true);
                #[cfg(feature = "cudnn")]
                super::conv::cudnn::set_tf32(true);
                Ok(())
            }
        }
    }
}
