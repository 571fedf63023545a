//! The GPU convolution: cuDNN called directly, with its set-up done once per shape.
//!
//! Candle's cuDNN conv creates every descriptor, asks cuDNN's heuristics for an algorithm
//! and allocates and zeroes a fresh workspace on each call; on an H100 it ran VGG16's
//! convs at 0.15–0.23× PyTorch's speed (docs/performance.md, GPU). Here the descriptors,
//! the algorithm and the workspace are kept per shape (and per thread: cuDNN handles are not
//! shared between threads), and the math type follows `--precision` explicitly.
//!
//! The algorithm is cuDNN's first heuristic choice by default, which is deterministic, so
//! two processes compute bit-identical convolutions. `LRPRUNE_CUDNN_ALGO=find` times every
//! algorithm once per shape (PyTorch's `cudnn.benchmark`); the fastest can differ between
//! processes when two are close, and with it the last bits of the results.

use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};
use candle_core::{CpuStorage, CudaStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

static TF32: AtomicBool = AtomicBool::new(false);

/// Let cuDNN use TF32 tensor cores for f32 convolutions (`--precision tf32`).
pub fn set_tf32(on: bool) {
    TF32.store(on, Ordering::Relaxed);
}

/// Whether this path takes the operands: CUDA, f32, no gradient wanted.
pub fn applies(operands: &[&Tensor]) -> bool {
    operands
        .iter()
        .all(|t| t.device().is_cuda() && t.dtype() == DType::F32 && !t.track_op())
}

/// `act(conv2d(x, w) + b)` (NCHW, OIHW, f32, groups 1) with symmetric padding `padding`;
/// the bias and the ReLU are applied in place on the conv's output.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    padding: usize,
    stride: usize,
    relu: bool,
) -> Result<Tensor> {
    let op = Conv {
        padding,
        stride,
        relu,
        bias: b.is_some(),
    };
    let w = w.contiguous()?;
    // Without a bias the third operand is not read.
    let b = b.map_or_else(|| Ok(w.clone()), Tensor::contiguous)?;
    x.contiguous()?.apply_op3_no_bwd(&w, &b, &op)
}

struct Conv {
    padding: usize,
    stride: usize,
    relu: bool,
    bias: bool,
}

fn ok(status: sys::cudnnStatus_t, what: &str) -> Result<()> {
    if status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        Ok(())
    } else {
        candle_core::bail!("cuDNN {what}: {status:?}")
    }
}

/// Everything one shape needs, made once.
struct Plan {
    x: sys::cudnnTensorDescriptor_t,
    /// The bias as a (1, O, 1, 1) tensor, and the ReLU.
    b: sys::cudnnTensorDescriptor_t,
    relu: sys::cudnnActivationDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
    algo: sys::cudnnConvolutionFwdAlgo_t,
    workspace: usize,
    out: (usize, usize, usize, usize),
}

/// (x dims, w dims, padding, stride, tf32)
type Key = ([usize; 4], [usize; 4], usize, usize, bool);

thread_local! {
    static HANDLE: RefCell<Option<(usize, sys::cudnnHandle_t)>> = const { RefCell::new(None) };
    static PLANS: RefCell<HashMap<Key, Plan>> = RefCell::new(HashMap::new());
    static WORKSPACE: RefCell<Option<CudaSlice<u8>>> = const { RefCell::new(None) };
}

/// This thread's cuDNN handle, bound to `stream`.
fn handle(stream: sys::cudaStream_t) -> Result<sys::cudnnHandle_t> {
    HANDLE.with(|h| {
        let mut h = h.borrow_mut();
        if let Some((s, handle)) = *h {
            if s == stream as usize {
                return Ok(handle);
            }
            // SAFETY: a handle this thread created; rebinding it to the new stream.
            ok(unsafe { sys::cudnnSetStream(handle, stream) }, "set stream")?;
            *h = Some((stream as usize, handle));
            return Ok(handle);
        }
        let mut handle = std::ptr::null_mut();
        // SAFETY: cudnnCreate writes a fresh handle; it lives for the thread.
        ok(unsafe { sys::cudnnCreate(&mut handle) }, "create")?;
        ok(unsafe { sys::cudnnSetStream(handle, stream) }, "set stream")?;
        *h = Some((stream as usize, handle));
        Ok(handle)
    })
}

fn plan(handle: sys::cudnnHandle_t, key: Key) -> Result<Plan> {
    let ([n, c, h, wd], [o, ci, kh, kw], p, s, tf32) = key;
    let i = |v: usize| v as i32;
    let (ho, wo) = ((h + 2 * p - kh) / s + 1, (wd + 2 * p - kw) / s + 1);
    let f32t = sys::cudnnDataType_t::CUDNN_DATA_FLOAT;
    let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
    // SAFETY: descriptors are created, set and (on success) owned by the returned plan,
    // which is cached for the life of the thread; the calls only read the arguments.
    unsafe {
        let (mut x, mut w, mut y, mut conv) = (
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        let (mut b, mut relu) = (std::ptr::null_mut(), std::ptr::null_mut());
        ok(sys::cudnnCreateTensorDescriptor(&mut b), "tensor")?;
        ok(
            sys::cudnnSetTensor4dDescriptor(b, nchw, f32t, 1, i(o), 1, 1),
            "bias",
        )?;
        ok(
            sys::cudnnCreateActivationDescriptor(&mut relu),
            "activation",
        )?;
        ok(
            sys::cudnnSetActivationDescriptor(
                relu,
                sys::cudnnActivationMode_t::CUDNN_ACTIVATION_RELU,
                sys::cudnnNanPropagation_t::CUDNN_PROPAGATE_NAN,
                0.0,
            ),
            "activation",
        )?;
        ok(sys::cudnnCreateTensorDescriptor(&mut x), "tensor")?;
        ok(sys::cudnnCreateTensorDescriptor(&mut y), "tensor")?;
        ok(sys::cudnnCreateFilterDescriptor(&mut w), "filter")?;
        ok(sys::cudnnCreateConvolutionDescriptor(&mut conv), "conv")?;
        ok(
            sys::cudnnSetTensor4dDescriptor(x, nchw, f32t, i(n), i(c), i(h), i(wd)),
            "x",
        )?;
        ok(
            sys::cudnnSetTensor4dDescriptor(y, nchw, f32t, i(n), i(o), i(ho), i(wo)),
            "y",
        )?;
        ok(
            sys::cudnnSetFilter4dDescriptor(w, f32t, nchw, i(o), i(ci), i(kh), i(kw)),
            "w",
        )?;
        let mode = sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
        ok(
            sys::cudnnSetConvolution2dDescriptor(conv, i(p), i(p), i(s), i(s), 1, 1, mode, f32t),
            "conv",
        )?;
        let math = if tf32 {
            sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
        } else {
            sys::cudnnMathType_t::CUDNN_FMA_MATH
        };
        ok(sys::cudnnSetConvolutionMathType(conv, math), "math type")?;
        let find = std::env::var("LRPRUNE_CUDNN_ALGO").as_deref() == Ok("find");
        let mut perf: [sys::cudnnConvolutionFwdAlgoPerf_t; 8] = std::mem::zeroed();
        let mut count = 0;
        if find {
            ok(
                sys::cudnnFindConvolutionForwardAlgorithm(
                    handle,
                    x,
                    w,
                    conv,
                    y,
                    8,
                    &mut count,
                    perf.as_mut_ptr(),
                ),
                "find algorithm",
            )?;
        } else {
            ok(
                sys::cudnnGetConvolutionForwardAlgorithm_v7(
                    handle,
                    x,
                    w,
                    conv,
                    y,
                    8,
                    &mut count,
                    perf.as_mut_ptr(),
                ),
                "algorithm heuristics",
            )?;
        }
        let best = perf[..count.max(0) as usize]
            .iter()
            .find(|p| p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS)
            .ok_or_else(|| candle_core::Error::Msg("cuDNN: no algorithm for this conv".into()))?;
        let mut workspace = 0usize;
        ok(
            sys::cudnnGetConvolutionForwardWorkspaceSize(
                handle,
                x,
                w,
                conv,
                y,
                best.algo,
                &mut workspace,
            ),
            "workspace size",
        )?;
        Ok(Plan {
            x,
            b,
            relu,
            w,
            y,
            conv,
            algo: best.algo,
            workspace,
            out: (n, o, ho, wo),
        })
    }
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        "lrprune-cudnn-conv"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("lrprune-cudnn-conv runs on CUDA tensors only")
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = xs.device.clone();
        let stream = dev.cuda_stream();
        let dims4 = |l: &Layout| -> Result<[usize; 4]> {
            let (a, b, c, d) = l.shape().dims4()?;
            Ok([a, b, c, d])
        };
        let key = (
            dims4(xl)?,
            dims4(wl)?,
            self.padding,
            self.stride,
            TF32.load(Ordering::Relaxed),
        );
        let raw_stream = stream.cu_stream() as sys::cudaStream_t;
        let handle = handle(raw_stream)?;
        let x = xs.as_cuda_slice::<f32>()?.slice(xl.start_offset()..);
        let w = ws.as_cuda_slice::<f32>()?.slice(wl.start_offset()..);
        let b = bs.as_cuda_slice::<f32>()?.slice(bl.start_offset()..);
        PLANS.with(|plans| {
            let mut plans = plans.borrow_mut();
            let p = match plans.entry(key) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(plan(handle, key)?),
            };
            let (n, o, ho, wo) = p.out;
            // SAFETY: every element of y is written by the convolution (beta = 0).
            let mut y = unsafe { dev.alloc::<f32>(n * o * ho * wo)? };
            WORKSPACE.with(|cell| -> Result<()> {
                let mut cell = cell.borrow_mut();
                if cell.as_ref().is_none_or(|b| b.len() < p.workspace) {
                    *cell = Some(unsafe { dev.alloc::<u8>(p.workspace.max(1))? });
                }
                let buf = cell.as_ref().expect("just allocated");
                let (xp, _rx) = x.device_ptr(&stream);
                let (wp, _rw) = w.device_ptr(&stream);
                let (bp, _rb) = buf.device_ptr(&stream);
                let (yp, _ry) = y.device_ptr_mut(&stream);
                let (one, zero) = (
                    &1f32 as *const f32 as *const _,
                    &0f32 as *const f32 as *const _,
                );
                // SAFETY: pointers to live device buffers whose sizes the descriptors
                // state; the work is queued on candle's stream, which orders later reads.
                // cuDNN allows the bias add and the activation in place (C = A + C, y = x).
                unsafe {
                    ok(
                        sys::cudnnConvolutionForward(
                            handle,
                            one,
                            p.x,
                            xp as *const _,
                            p.w,
                            wp as *const _,
                            p.conv,
                            p.algo,
                            bp as *mut _,
                            p.workspace,
                            zero,
                            p.y,
                            yp as *mut _,
                        ),
                        "convolution",
                    )?;
                    if self.bias {
                        let (biasp, _rbias) = b.device_ptr(&stream);
                        ok(
                            sys::cudnnAddTensor(
                                handle,
                                one,
                                p.b,
                                biasp as *const _,
                                one,
                                p.y,
                                yp as *mut _,
                            ),
                            "bias",
                        )?;
                    }
                    if self.relu {
                        ok(
                            sys::cudnnActivationForward(
                                handle,
                                p.relu,
                                one,
                                p.y,
                                yp as *const _,
                                zero,
                                p.y,
                                yp as *mut _,
                            ),
                            "relu",
                        )?;
                    }
                }
                Ok(())
            })?;
            let shape = Shape::from((n, o, ho, wo));
            Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), shape))
        })
    }
}
