//! cuDNN's graph (backend) API for the forward convolution: the engines PyTorch picks from.
//!
//! The legacy `cudnnConvolutionForward` reaches a smaller set of kernels. With TF32 on an
//! H100 its best choice ran VGG16's convs at 0.8× PyTorch's speed, timed or not
//! (docs/performance.md, GPU). PyTorch describes the convolution as an operation graph,
//! asks cuDNN's heuristics for a ranked list of engine configurations and runs the first
//! one that builds, skipping those its settings forbid. This module does the same, with
//! lrprune's rules for what is forbidden:
//! - no non-deterministic engine (two processes must compute the same bits);
//! - no engine that converts its inputs down (fp16/bf16) or reduces in lower precision;
//! - tensor cores (TF32 on f32 data) only with `--precision tf32`;
//! - no engine compiled at run time (each pruned shape would pay the compilation).
//!
//! Everything here is set up once per shape and kept by the caller (`super::cudnn`);
//! a call only builds the small variant pack that names the buffers.

use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::Result;
use std::ffi::c_void;
use std::rc::Rc;
use sys::cudnnBackendAttributeName_t as A;
use sys::cudnnBackendAttributeType_t as T;
use sys::cudnnBackendDescriptorType_t as D;
use sys::cudnnBackendNumericalNote_t as Note;

/// The unique ids naming the convolution's operands in the graph and the variant pack.
const X: i64 = 1;
const W: i64 = 2;
const Y: i64 = 3;

fn ok(status: sys::cudnnStatus_t, what: &str) -> Result<()> {
    if status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        Ok(())
    } else {
        // No backtrace: these messages end up in the bench's report of the kernels.
        Err(candle_core::Error::Msg(format!(
            "cuDNN graph API, {what}: {status:?}"
        )))
    }
}

/// One backend descriptor, destroyed with its owner.
struct Desc(sys::cudnnBackendDescriptor_t);

impl Desc {
    fn new(kind: D) -> Result<Self> {
        let mut d = std::ptr::null_mut();
        // SAFETY: writes a fresh descriptor, owned (and destroyed) by the returned value.
        ok(
            unsafe { sys::cudnnBackendCreateDescriptor(kind, &mut d) },
            &format!("create {kind:?}"),
        )?;
        Ok(Desc(d))
    }

    fn set<V>(&self, name: A, ty: T, values: &[V]) -> Result<()> {
        // SAFETY: `values` holds `len` elements of the type `ty` names (each caller pairs
        // them); cuDNN copies them.
        let status = unsafe {
            sys::cudnnBackendSetAttribute(
                self.0,
                name,
                ty,
                values.len() as i64,
                values.as_ptr() as *const c_void,
            )
        };
        ok(status, &format!("set {name:?}"))
    }

    fn ints(&self, name: A, values: &[i64]) -> Result<()> {
        self.set(name, T::CUDNN_TYPE_INT64, values)
    }

    fn descs(&self, name: A, values: &[&Desc]) -> Result<()> {
        let raw: Vec<_> = values.iter().map(|d| d.0).collect();
        self.set(name, T::CUDNN_TYPE_BACKEND_DESCRIPTOR, &raw)
    }

    fn finalize(self, what: &str) -> Result<Self> {
        // SAFETY: a descriptor this value owns, every required attribute set.
        ok(
            unsafe { sys::cudnnBackendFinalize(self.0) },
            &format!("finalize {what}"),
        )?;
        Ok(self)
    }

    /// Up to `out.len()` elements of attribute `name`; returns how many there are.
    fn get<V>(&self, name: A, ty: T, out: &mut [V]) -> Result<usize> {
        let mut n = 0i64;
        // SAFETY: `out` has room for the requested count of elements of type `ty`.
        let status = unsafe {
            sys::cudnnBackendGetAttribute(
                self.0,
                name,
                ty,
                out.len() as i64,
                &mut n,
                out.as_mut_ptr() as *mut c_void,
            )
        };
        ok(status, &format!("get {name:?}"))?;
        Ok(n.max(0) as usize)
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created by `Desc::new` and destroyed once, here.
        unsafe { sys::cudnnBackendDestroyDescriptor(self.0) };
    }
}

/// A convolution's shape: NCHW input, OIHW filters, symmetric padding, equal strides, and
/// the byte alignment every buffer it is run on has (at most 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvShape {
    pub x: [usize; 4],
    pub w: [usize; 4],
    pub padding: usize,
    pub stride: usize,
    pub align: usize,
}

impl ConvShape {
    pub fn y(&self) -> [usize; 4] {
        let ([n, _, h, wd], [o, _, kh, kw]) = (self.x, self.w);
        let (p, s) = (self.padding, self.stride);
        [n, o, (h + 2 * p - kh) / s + 1, (wd + 2 * p - kw) / s + 1]
    }

    fn tensor(&self, uid: i64, dims: [usize; 4]) -> Result<Desc> {
        let d = Desc::new(D::CUDNN_BACKEND_TENSOR_DESCRIPTOR)?;
        let dims = dims.map(|v| v as i64);
        let strides = [dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1];
        d.set(
            A::CUDNN_ATTR_TENSOR_DATA_TYPE,
            T::CUDNN_TYPE_DATA_TYPE,
            &[sys::cudnnDataType_t::CUDNN_DATA_FLOAT],
        )?;
        d.ints(A::CUDNN_ATTR_TENSOR_DIMENSIONS, &dims)?;
        d.ints(A::CUDNN_ATTR_TENSOR_STRIDES, &strides)?;
        d.ints(A::CUDNN_ATTR_TENSOR_UNIQUE_ID, &[uid])?;
        d.ints(A::CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, &[self.align as i64])?;
        d.finalize("tensor")
    }

    fn convolution(&self) -> Result<Desc> {
        let d = Desc::new(D::CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR)?;
        let (p, s) = (self.padding as i64, self.stride as i64);
        d.set(
            A::CUDNN_ATTR_CONVOLUTION_COMP_TYPE,
            T::CUDNN_TYPE_DATA_TYPE,
            &[sys::cudnnDataType_t::CUDNN_DATA_FLOAT],
        )?;
        d.set(
            A::CUDNN_ATTR_CONVOLUTION_CONV_MODE,
            T::CUDNN_TYPE_CONVOLUTION_MODE,
            &[sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION],
        )?;
        d.ints(A::CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, &[2])?;
        d.ints(A::CUDNN_ATTR_CONVOLUTION_DILATIONS, &[1, 1])?;
        d.ints(A::CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, &[s, s])?;
        d.ints(A::CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, &[p, p])?;
        d.ints(A::CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, &[p, p])?;
        d.finalize("convolution")
    }

    /// The operation graph `y = conv(x, w)`.
    fn graph(&self, handle: sys::cudnnHandle_t) -> Result<Desc> {
        let (x, w, y) = (
            self.tensor(X, self.x)?,
            self.tensor(W, self.w)?,
            self.tensor(Y, self.y())?,
        );
        let conv = self.convolution()?;
        let op = Desc::new(D::CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR)?;
        op.descs(A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, &[&x])?;
        op.descs(A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, &[&w])?;
        op.descs(A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, &[&y])?;
        op.descs(
            A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
            &[&conv],
        )?;
        op.set(
            A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
            T::CUDNN_TYPE_FLOAT,
            &[1f32],
        )?;
        op.set(
            A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA,
            T::CUDNN_TYPE_FLOAT,
            &[0f32],
        )?;
        let op = op.finalize("convolution forward")?;
        let g = Desc::new(D::CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR)?;
        g.set(
            A::CUDNN_ATTR_OPERATIONGRAPH_HANDLE,
            T::CUDNN_TYPE_HANDLE,
            &[handle],
        )?;
        g.descs(A::CUDNN_ATTR_OPERATIONGRAPH_OPS, &[&op])?;
        g.finalize("operation graph")
    }
}

/// A built execution plan for one shape: what a call runs.
pub struct Graph {
    plan: Desc,
    /// The engine configuration and the operation graph the plan was built from: cuDNN's
    /// own frontend keeps them alive beside a plan, so this does too.
    _from: (Desc, Rc<Desc>),
    pub workspace: usize,
    /// cuDNN's global index of the engine, and its numerical notes (for the log).
    pub engine: i64,
    pub notes: Vec<String>,
    /// Where the configuration came from: instant or fallback heuristics, or enumeration.
    pub source: &'static str,
}

/// Why an engine configuration is not taken, or `None` when it may run.
fn forbidden(notes: &[u32], tf32: bool) -> Option<&'static str> {
    let has = |n: Note| notes.contains(&(n as u32));
    if has(Note::CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) {
        Some("non-deterministic")
    } else if has(Note::CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS)
        || has(Note::CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION)
    {
        Some("reduced precision")
    } else if !tf32 && has(Note::CUDNN_NUMERICAL_NOTE_TENSOR_CORE) {
        Some("tensor cores (TF32) outside --precision tf32")
    } else {
        None
    }
}

fn note_names(notes: &[u32]) -> Vec<String> {
    let all = [
        (Note::CUDNN_NUMERICAL_NOTE_TENSOR_CORE, "tensor-core"),
        (Note::CUDNN_NUMERICAL_NOTE_FFT, "fft"),
        (Note::CUDNN_NUMERICAL_NOTE_WINOGRAD, "winograd"),
        (Note::CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_4x4, "winograd-4x4"),
        (Note::CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_6x6, "winograd-6x6"),
        (
            Note::CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_13x13,
            "winograd-13x13",
        ),
    ];
    all.iter()
        .filter(|(n, _)| notes.contains(&(*n as u32)))
        .map(|(_, s)| s.to_string())
        .collect()
}

/// How many ranked configurations one heuristics query returns at most.
const MAX_CONFIGS: usize = 64;

/// The engine configurations cuDNN's heuristics rank for the graph in `mode`, best first.
/// The buffer is sized up front: asking for the count alone is not answered alike by every
/// cuDNN release.
fn ranked(graph: &Desc, mode: sys::cudnnBackendHeurMode_t) -> Result<Vec<Desc>> {
    let heur = Desc::new(D::CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR)?;
    heur.descs(A::CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, &[graph])?;
    heur.set(
        A::CUDNN_ATTR_ENGINEHEUR_MODE,
        T::CUDNN_TYPE_HEUR_MODE,
        &[mode],
    )?;
    let heur = heur.finalize("heuristics")?;
    let mut configs = (0..MAX_CONFIGS)
        .map(|_| Desc::new(D::CUDNN_BACKEND_ENGINECFG_DESCRIPTOR))
        .collect::<Result<Vec<_>>>()?;
    let mut raw: Vec<_> = configs.iter().map(|d| d.0).collect();
    let got = heur.get(
        A::CUDNN_ATTR_ENGINEHEUR_RESULTS,
        T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
        &mut raw,
    )?;
    configs.truncate(got);
    Ok(configs)
}

/// Every engine cuDNN has for the graph, by index, each with its default knobs: the last
/// resort when the heuristics rank none.
fn enumerated(graph: &Desc) -> Result<Vec<Desc>> {
    let mut count = [0i64];
    graph.get(
        A::CUDNN_ATTR_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT,
        T::CUDNN_TYPE_INT64,
        &mut count,
    )?;
    let mut configs = Vec::new();
    for index in 0..count[0] {
        let build = || -> Result<Desc> {
            let engine = Desc::new(D::CUDNN_BACKEND_ENGINE_DESCRIPTOR)?;
            engine.descs(A::CUDNN_ATTR_ENGINE_OPERATION_GRAPH, &[graph])?;
            engine.ints(A::CUDNN_ATTR_ENGINE_GLOBAL_INDEX, &[index])?;
            let engine = engine.finalize("engine")?;
            let config = Desc::new(D::CUDNN_BACKEND_ENGINECFG_DESCRIPTOR)?;
            config.descs(A::CUDNN_ATTR_ENGINECFG_ENGINE, &[&engine])?;
            config.finalize("engine configuration")
        };
        // An engine that does not support this graph refuses at finalize.
        if let Ok(config) = build() {
            configs.push(config);
        }
    }
    Ok(configs)
}

/// The engine configurations for `shape` that lrprune allows and that build, best first:
/// at most `limit`. Instant-mode heuristics first, then their fallback list, as PyTorch
/// does; every engine by index if both are empty.
pub fn plans(
    handle: sys::cudnnHandle_t,
    shape: &ConvShape,
    tf32: bool,
    limit: usize,
) -> Result<Vec<Graph>> {
    let graph = Rc::new(shape.graph(handle)?);
    let mut built = Vec::new();
    let mut seen = Vec::new();
    use sys::cudnnBackendHeurMode_t::{CUDNN_HEUR_MODE_FALLBACK, CUDNN_HEUR_MODE_INSTANT};
    for source in ["instant heuristics", "fallback heuristics", "all engines"] {
        let configs = match source {
            "instant heuristics" => ranked(&graph, CUDNN_HEUR_MODE_INSTANT)?,
            "fallback heuristics" => ranked(&graph, CUDNN_HEUR_MODE_FALLBACK)?,
            _ => enumerated(&graph)?,
        };
        let mut skipped = Vec::new();
        let total = configs.len();
        for config in configs {
            if built.len() >= limit {
                break;
            }
            match candidate(handle, config, &graph, tf32, source)? {
                Ok(g) => built.push(g),
                Err(why) => skipped.push(why),
            }
        }
        seen.push(format!("{source}: {total} ({})", skipped.join(", ")));
        if !built.is_empty() {
            return Ok(built);
        }
    }
    Err(candle_core::Error::Msg(format!(
        "cuDNN graph API: no engine allowed for {shape:?}, tf32 {tf32}; {}",
        seen.join("; ")
    )))
}

/// The plan for one engine configuration, or why it is not taken.
fn candidate(
    handle: sys::cudnnHandle_t,
    config: Desc,
    graph: &Rc<Desc>,
    tf32: bool,
    source: &'static str,
) -> Result<std::result::Result<Graph, String>> {
    let engine = Desc::new(D::CUDNN_BACKEND_ENGINE_DESCRIPTOR)?;
    config.get(
        A::CUDNN_ATTR_ENGINECFG_ENGINE,
        T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
        &mut [engine.0],
    )?;
    let mut notes = [u32::MAX; 16];
    let n = engine.get(
        A::CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
        T::CUDNN_TYPE_NUMERICAL_NOTE,
        &mut notes,
    )?;
    let notes = &notes[..n.min(16)];
    let mut index = [0i64];
    engine.get(
        A::CUDNN_ATTR_ENGINE_GLOBAL_INDEX,
        T::CUDNN_TYPE_INT64,
        &mut index,
    )?;
    let index = index[0];
    if let Some(why) = forbidden(notes, tf32) {
        return Ok(Err(format!("engine {index}: {why}")));
    }
    // A pruning sweep meets a new shape at nearly every step: an engine compiled at run
    // time for each (NVRTC, tenths of a second) would cost more than it saves.
    let mut behaviour = [u32::MAX; 8];
    let n = engine
        .get(
            A::CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE,
            T::CUDNN_TYPE_BEHAVIOR_NOTE,
            &mut behaviour,
        )
        .unwrap_or(0);
    let compiled = sys::cudnnBackendBehaviorNote_t::CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION as u32;
    if behaviour[..n.min(8)].contains(&compiled) {
        return Ok(Err(format!("engine {index}: compiled at run time")));
    }
    // Some configurations do not build for a shape (cuDNN says so at finalize): the next
    // one is tried, as PyTorch does.
    let plan = match execution_plan(handle, &config) {
        Ok(plan) => plan,
        Err(e) => return Ok(Err(format!("engine {index}: {e}"))),
    };
    let mut ws = [0i64];
    plan.get(
        A::CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
        T::CUDNN_TYPE_INT64,
        &mut ws,
    )?;
    Ok(Ok(Graph {
        plan,
        _from: (config, graph.clone()),
        workspace: ws[0].max(0) as usize,
        engine: index,
        notes: note_names(notes),
        source,
    }))
}

fn execution_plan(handle: sys::cudnnHandle_t, config: &Desc) -> Result<Desc> {
    let plan = Desc::new(D::CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR)?;
    plan.set(
        A::CUDNN_ATTR_EXECUTION_PLAN_HANDLE,
        T::CUDNN_TYPE_HANDLE,
        &[handle],
    )?;
    plan.descs(A::CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, &[config])?;
    plan.finalize("execution plan")
}

/// Queues `y = conv(x, w)` on the handle's stream.
///
/// # Safety
/// `x`, `w` and `y` point to live device buffers of the plan's shape, aligned as the
/// shape says; `workspace` to at least `g.workspace` bytes.
pub unsafe fn execute(
    handle: sys::cudnnHandle_t,
    g: &Graph,
    x: *const c_void,
    w: *const c_void,
    y: *mut c_void,
    workspace: *mut c_void,
) -> Result<()> {
    let pack = Desc::new(D::CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR)?;
    pack.ints(A::CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, &[X, W, Y])?;
    pack.set(
        A::CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
        T::CUDNN_TYPE_VOID_PTR,
        &[x as *mut c_void, w as *mut c_void, y],
    )?;
    pack.set(
        A::CUDNN_ATTR_VARIANT_PACK_WORKSPACE,
        T::CUDNN_TYPE_VOID_PTR,
        &[workspace],
    )?;
    let pack = pack.finalize("variant pack")?;
    ok(
        sys::cudnnBackendExecute(handle, g.plan.0, pack.0),
        "execute",
    )
}

/// The byte alignment of a device address, at most 16.
pub fn alignment(ptr: u64) -> usize {
    [16, 8, 4, 2]
        .into_iter()
        .find(|a| ptr.is_multiple_of(*a as u64))
        .unwrap_or(1)
}
