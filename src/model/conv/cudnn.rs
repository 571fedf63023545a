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
use std::sync::Mutex;
use std::time::Instant;

use super::cudnn_graph::{self, ConvShape, Graph};

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
    kernel: Kernel,
}

/// What computes the convolution itself; bias and ReLU follow through the legacy API.
enum Kernel {
    /// Not chosen yet (only while a plan is being made).
    None,
    /// cuDNN's graph API, the default: the engines PyTorch chooses from (`cudnn_graph`).
    Graph(Graph),
    /// The legacy API: with `LRPRUNE_CUDNN_API=legacy`, or where no allowed engine builds.
    Legacy {
        algo: sys::cudnnConvolutionFwdAlgo_t,
        workspace: usize,
    },
}

impl Kernel {
    fn workspace(&self) -> usize {
        match self {
            Kernel::Graph(g) => g.workspace,
            Kernel::Legacy { workspace, .. } => *workspace,
            Kernel::None => 0,
        }
    }

    fn describe(&self) -> String {
        match self {
            Kernel::Graph(g) => format!(
                "graph engine {} [{}] from the {}",
                g.engine,
                g.notes.join(","),
                g.source
            ),
            Kernel::Legacy { algo, .. } => format!("legacy {algo:?}"),
            Kernel::None => "none".into(),
        }
    }
}

/// (shape and buffer alignment, tf32)
type Key = (ConvShape, bool);

thread_local! {
    static HANDLE: RefCell<Option<(usize, sys::cudnnHandle_t)>> = const { RefCell::new(None) };
    static PLANS: RefCell<HashMap<Key, Plan>> = RefCell::new(HashMap::new());
    static WORKSPACE: RefCell<Option<CudaSlice<u8>>> = const { RefCell::new(None) };
}

/// Which kernels the plans made so far use, for the bench's report.
static CHOSEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// One line per shape planned in this process: its kernel (graph engine or legacy
/// algorithm) and, where the graph API was not used, why.
pub fn chosen() -> Vec<String> {
    CHOSEN.lock().map(|c| c.clone()).unwrap_or_default()
}

fn note_choice(key: &Key, line: String) {
    if std::env::var_os("LRPRUNE_CUDNN_LOG").is_some() {
        eprintln!("cudnn: {key:?}: {line}");
    }
    // A sweep plans every pruned shape; the report needs the first few.
    if let Ok(mut c) = CHOSEN.lock() {
        if c.len() < 256 {
            c.push(format!("{:?} · {:?}: {line}", key.0.x, key.0.w));
        }
    }
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

/// How the kernel is chosen: `LRPRUNE_CUDNN_ALGO=find` times the candidates once per shape
/// (PyTorch's `cudnn.benchmark`); otherwise the heuristics' first choice.
fn find() -> bool {
    std::env::var("LRPRUNE_CUDNN_ALGO").as_deref() == Ok("find")
}

/// The graph API's kernel for `key`: the heuristics' first that builds, or under `find`
/// the fastest of up to 8 by `time`; the error says why there is none.
fn graph_kernel(
    handle: sys::cudnnHandle_t,
    key: Key,
    time: &dyn Fn(&Graph) -> Result<f64>,
) -> Result<Kernel> {
    if std::env::var("LRPRUNE_CUDNN_API").as_deref() == Ok("legacy") {
        candle_core::bail!("LRPRUNE_CUDNN_API=legacy");
    }
    let (shape, tf32) = key;
    let candidates = cudnn_graph::plans(handle, &shape, tf32, if find() { 8 } else { 1 })?;
    if !find() {
        let g = candidates
            .into_iter()
            .next()
            .expect("plans returns at least one");
        return Ok(Kernel::Graph(g));
    }
    let (mut best, mut times) = (None::<(f64, Graph)>, vec![]);
    for g in candidates {
        // One that builds but cannot run is left out of the race.
        match time(&g) {
            Ok(t) => {
                times.push(format!("{}: {:.3} ms", g.engine, t * 1e3));
                if best.as_ref().is_none_or(|(b, _)| t < *b) {
                    best = Some((t, g));
                }
            }
            Err(e) => times.push(format!("{}: {e}", g.engine)),
        }
    }
    match best {
        Some((_, g)) => {
            note_choice(&key, format!("timed: {}", times.join(", ")));
            Ok(Kernel::Graph(g))
        }
        None => candle_core::bail!("no graph engine ran: {}", times.join("; ")),
    }
}

/// The legacy API's algorithm for the plan's descriptors.
fn legacy_kernel(handle: sys::cudnnHandle_t, p: &Plan) -> Result<Kernel> {
    let (x, w, conv, y) = (p.x, p.w, p.conv, p.y);
    let mut perf: [sys::cudnnConvolutionFwdAlgoPerf_t; 8] = unsafe { std::mem::zeroed() };
    let mut count = 0;
    // SAFETY: descriptors of this plan; perf has room for the 8 results requested.
    unsafe {
        if find() {
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
    }
    let best = perf[..count.max(0) as usize]
        .iter()
        .find(|p| p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS)
        .ok_or_else(|| candle_core::Error::Msg("cuDNN: no algorithm for this conv".into()))?;
    let mut workspace = 0usize;
    // SAFETY: as above.
    ok(
        unsafe {
            sys::cudnnGetConvolutionForwardWorkspaceSize(
                handle,
                x,
                w,
                conv,
                y,
                best.algo,
                &mut workspace,
            )
        },
        "workspace size",
    )?;
    Ok(Kernel::Legacy {
        algo: best.algo,
        workspace,
    })
}

/// The plan's kernel: the graph API's, else the legacy API's (saying why).
fn choose_kernel(
    handle: sys::cudnnHandle_t,
    key: Key,
    p: &mut Plan,
    time: &dyn Fn(&Graph) -> Result<f64>,
) -> Result<()> {
    p.kernel = match graph_kernel(handle, key, time) {
        Ok(k) => k,
        Err(why) => {
            let k = legacy_kernel(handle, p)?;
            note_choice(&key, format!("{} ({why})", k.describe()));
            k
        }
    };
    if let Kernel::Graph(_) = p.kernel {
        note_choice(&key, p.kernel.describe());
    }
    Ok(())
}

fn plan(
    handle: sys::cudnnHandle_t,
    key: Key,
    time: &dyn Fn(&Graph) -> Result<f64>,
) -> Result<Plan> {
    let (shape, tf32) = key;
    let ([n, c, h, wd], [o, ci, kh, kw]) = (shape.x, shape.w);
    let out = shape.y();
    let (p, s) = (shape.padding, shape.stride);
    let i = |v: usize| v as i32;
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
        let [_, _, ho, wo] = out;
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
        let mut plan = Plan {
            x,
            b,
            relu,
            w,
            y,
            conv,
            kernel: Kernel::None,
        };
        choose_kernel(handle, key, &mut plan, time)?;
        Ok(plan)
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
        let raw_stream = stream.cu_stream() as sys::cudaStream_t;
        let handle = handle(raw_stream)?;
        let x = xs.as_cuda_slice::<f32>()?.slice(xl.start_offset()..);
        let w = ws.as_cuda_slice::<f32>()?.slice(wl.start_offset()..);
        let b = bs.as_cuda_slice::<f32>()?.slice(bl.start_offset()..);
        let (xp, _rx) = x.device_ptr(&stream);
        let (wp, _rw) = w.device_ptr(&stream);
        let (x_dims, w_dims) = (dims4(xl)?, dims4(wl)?);
        let mut shape = ConvShape {
            x: x_dims,
            w: w_dims,
            padding: self.padding,
            stride: self.stride,
            align: 16,
        };
        let [n, o, ho, wo] = shape.y();
        // SAFETY: every element of y is written by the convolution (beta = 0).
        let mut y = unsafe { dev.alloc::<f32>(n * o * ho * wo)? };
        let (yp, ry) = y.device_ptr_mut(&stream);
        // The graph API is told the buffers' alignment; a view into a larger tensor may
        // start at any float.
        shape.align = [xp, wp, yp]
            .map(cudnn_graph::alignment)
            .into_iter()
            .min()
            .unwrap_or(1);
        let key = (shape, TF32.load(Ordering::Relaxed));
        let driver = |e: candle_core::cuda_backend::cudarc::driver::DriverError| {
            candle_core::Error::Msg(format!("CUDA: {e:?}"))
        };
        // A graph candidate's best of 3 runs on these buffers (once per shape and process).
        let time = |g: &Graph| -> Result<f64> {
            // SAFETY: scratch the candidate may use in full.
            let mut buf = unsafe { dev.alloc::<u8>(g.workspace.max(1))? };
            let (bp, _rb) = buf.device_ptr_mut(&stream);
            let run = || {
                // SAFETY: the live buffers of this call, sized and aligned as the plan says.
                unsafe { cudnn_graph::execute(handle, g, xp as _, wp as _, yp as _, bp as _) }
            };
            run()?;
            stream.synchronize().map_err(driver)?;
            let mut best = f64::INFINITY;
            for _ in 0..3 {
                let t = Instant::now();
                run()?;
                stream.synchronize().map_err(driver)?;
                best = best.min(t.elapsed().as_secs_f64());
            }
            Ok(best)
        };
        let (one, zero) = (
            &1f32 as *const f32 as *const _,
            &0f32 as *const f32 as *const _,
        );
        // y = conv(x, w) with the plan's kernel, on this thread's workspace.
        let run_conv = |p: &Plan| -> Result<()> {
            WORKSPACE.with(|cell| {
                let mut cell = cell.borrow_mut();
                let need = p.kernel.workspace();
                if cell.as_ref().is_none_or(|b| b.len() < need) {
                    // SAFETY: scratch, written before it is read.
                    *cell = Some(unsafe { dev.alloc::<u8>(need.max(1))? });
                }
                let buf = cell.as_ref().expect("just allocated");
                let (bp, _rb) = buf.device_ptr(&stream);
                // SAFETY: pointers to live device buffers whose sizes the descriptors
                // state; the work is queued on candle's stream, which orders later reads.
                unsafe {
                    match &p.kernel {
                        Kernel::Graph(g) => {
                            cudnn_graph::execute(handle, g, xp as _, wp as _, yp as _, bp as _)
                        }
                        Kernel::Legacy { algo, workspace } => ok(
                            sys::cudnnConvolutionForward(
                                handle,
                                one,
                                p.x,
                                xp as *const _,
                                p.w,
                                wp as *const _,
                                p.conv,
                                *algo,
                                bp as *mut _,
                                *workspace,
                                zero,
                                p.y,
                                yp as *mut _,
                            ),
                            "convolution",
                        ),
                        Kernel::None => candle_core::bail!("cuDNN: no kernel chosen"),
                    }
                }
            })
        };
        PLANS.with(|plans| -> Result<()> {
            let mut plans = plans.borrow_mut();
            let p = match plans.entry(key) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(plan(handle, key, &time)?),
            };
            match run_conv(p) {
                // A graph engine that built but does not run: the legacy API from now on.
                Err(e) if matches!(p.kernel, Kernel::Graph(_)) => {
                    let k = legacy_kernel(handle, p)?;
                    note_choice(&key, format!("{} (graph engine failed: {e})", k.describe()));
                    p.kernel = k;
                    run_conv(p)?;
                }
                r => r?,
            }
            // SAFETY: as above; cuDNN allows the bias add and the activation in place
            // (C = A + C, y = x).
            unsafe {
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
        drop(ry);
        let shape = Shape::from((n, o, ho, wo));
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), shape))
    }
}
