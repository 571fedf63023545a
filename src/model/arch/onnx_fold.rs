//! Constant folding of the small computations exporters leave in a graph: the shape
//! arithmetic a TensorFlow-converted model does at run time for its SAME padding (`Shape` →
//! `Gather` → `Add`/`Sub`/`Div` → `Concat` → a `Pad`'s pads), `Cast`s, `ConstantOfShape`.
//! The importer evaluates such a node once its inputs are all constants and meets the result
//! as a constant, as if the exporter had folded it. Only small tensors take this path (the
//! weights are read directly), so the values are held as f64, exact for integers < 2⁵³.

use crate::assets::protobuf::{OnnxNode, OnnxTensor, ONNX_FLOAT, ONNX_INT64};
use anyhow::{bail, Result};

/// ONNX's `INT32` element type (`Cast` targets it too).
const ONNX_INT32: i32 = 6;

/// A small constant tensor: its dims, its values in row-major order, whether it holds
/// integers.
#[derive(Debug, Clone, PartialEq)]
pub struct Small {
    pub dims: Vec<usize>,
    pub data: Vec<f64>,
    pub int: bool,
}

impl Small {
    /// A float or integer tensor's values (`None` for other element types).
    pub fn of(t: &OnnxTensor) -> Option<Small> {
        let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
        let raw = !t.raw_data.is_empty();
        let (data, int): (Vec<f64>, bool) = match t.data_type {
            ONNX_FLOAT => (t.floats().into_iter().map(f64::from).collect(), false),
            ONNX_INT64 if raw => (
                (t.raw_data.chunks_exact(8))
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f64)
                    .collect(),
                true,
            ),
            ONNX_INT64 => (t.int64_data.iter().map(|&v| v as f64).collect(), true),
            ONNX_INT32 if raw => (
                (t.raw_data.chunks_exact(4))
                    .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as f64)
                    .collect(),
                true,
            ),
            _ => return None,
        };
        (data.len() == dims.iter().product::<usize>()).then_some(Small { dims, data, int })
    }

    /// As an ONNX tensor named `name` (int64 or float).
    pub fn tensor(&self, name: &str) -> OnnxTensor {
        let dims = self.dims.iter().map(|&d| d as i64).collect();
        let (data_type, float_data, int64_data) = if self.int {
            (
                ONNX_INT64,
                vec![],
                self.data.iter().map(|&v| v as i64).collect(),
            )
        } else {
            (
                ONNX_FLOAT,
                self.data.iter().map(|&v| v as f32).collect(),
                vec![],
            )
        };
        OnnxTensor {
            dims,
            data_type,
            float_data,
            int64_data,
            name: name.into(),
            raw_data: vec![],
        }
    }

    fn ints(&self) -> Vec<i64> {
        self.data.iter().map(|&v| v as i64).collect()
    }
}

/// The ops [`fold`] evaluates (`Shape` of a feature map is the importer's: it needs the
/// value's shape).
pub const FOLDED: &[&str] = &[
    "Identity",
    "Shape",
    "Cast",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "ConstantOfShape",
    "Concat",
    "Reshape",
    "Transpose",
    "Slice",
    "Gather",
    "Unsqueeze",
    "Squeeze",
];

/// The most values a folded tensor may hold: shape arithmetic needs a handful, and a
/// hostile file must not make the importer allocate without bound.
const MOST: usize = 1 << 20;

/// `node` evaluated on its constant inputs (`None`: an input left empty).
pub fn fold(node: &OnnxNode, ins: &[Option<Small>]) -> Result<Small> {
    let t = evaluate(node, ins)?;
    if t.data.len() > MOST || t.data.len() != t.dims.iter().product::<usize>() {
        bail!(
            "a folded constant of shape {:?}: at most {MOST} values are folded",
            t.dims
        );
    }
    Ok(t)
}

fn evaluate(node: &OnnxNode, ins: &[Option<Small>]) -> Result<Small> {
    let x = ins.first().cloned().flatten();
    let x = || x.clone().ok_or_else(|| anyhow::anyhow!("no input to fold"));
    let int_attr = |name: &str| attr(node, name).map(|a| a.i);
    let ints_attr = |name: &str| attr(node, name).map(|a| a.ints.clone());
    let input_ints = |i: usize| ins.get(i).cloned().flatten().map(|t| t.ints());
    Ok(match node.op_type.as_str() {
        "Identity" => x()?,
        "Shape" => {
            let t = x()?;
            Small {
                dims: vec![t.dims.len()],
                data: t.dims.iter().map(|&d| d as f64).collect(),
                int: true,
            }
        }
        "Cast" => {
            let mut t = x()?;
            match int_attr("to") {
                Some(1) => t.int = false,
                Some(6) | Some(7) => {
                    t.data.iter_mut().for_each(|v| *v = v.trunc());
                    t.int = true;
                }
                to => bail!("a cast to ONNX type {to:?}; only to float, int32 and int64"),
            }
            t
        }
        op @ ("Add" | "Sub" | "Mul" | "Div") => {
            let b = ins.get(1).cloned().flatten();
            let (a, b) = (x()?, b.ok_or_else(|| anyhow::anyhow!("no second operand"))?);
            let int = a.int && b.int;
            broadcast(
                &a,
                &b,
                |p, q| match op {
                    "Add" => p + q,
                    "Sub" => p - q,
                    "Mul" => p * q,
                    _ if int => (p / q).trunc(),
                    _ => p / q,
                },
                int,
            )?
        }
        "ConstantOfShape" => {
            let dims: Vec<usize> = x()?.ints().iter().map(|&d| d.max(0) as usize).collect();
            if dims
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .is_none_or(|n| n > MOST)
            {
                bail!("a constant of shape {dims:?}: at most {MOST} values are folded");
            }
            let fill = attr(node, "value")
                .and_then(|a| a.t.as_ref())
                .and_then(Small::of)
                .unwrap_or(Small {
                    dims: vec![1],
                    data: vec![0.0],
                    int: false,
                });
            let v = *fill.data.first().unwrap_or(&0.0);
            Small {
                data: vec![v; dims.iter().product()],
                dims,
                int: fill.int,
            }
        }
        "Concat" => {
            let parts: Vec<Small> = ins.iter().flatten().cloned().collect();
            let first = parts
                .first()
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("nothing to join"))?;
            let axis = axis_of(int_attr("axis").unwrap_or(0), first.dims.len())?;
            concat(&parts, axis)?
        }
        "Reshape" => {
            let t = x()?;
            let shape = input_ints(1).ok_or_else(|| anyhow::anyhow!("no shape"))?;
            reshape(t, &shape)?
        }
        "Transpose" => {
            let t = x()?;
            let perm: Vec<usize> = match ints_attr("perm") {
                Some(p) => p.iter().map(|&a| a as usize).collect(),
                None => (0..t.dims.len()).rev().collect(),
            };
            permute(&t, &perm)?
        }
        "Slice" => {
            let t = x()?;
            let starts = input_ints(1).ok_or_else(|| anyhow::anyhow!("no starts"))?;
            let ends = input_ints(2).ok_or_else(|| anyhow::anyhow!("no ends"))?;
            let axes = input_ints(3).unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = input_ints(4).unwrap_or_else(|| vec![1; starts.len()]);
            slice(&t, &starts, &ends, &axes, &steps)?
        }
        "Gather" => {
            let t = x()?;
            let idx = ins
                .get(1)
                .cloned()
                .flatten()
                .ok_or_else(|| anyhow::anyhow!("no indices"))?;
            let axis = axis_of(int_attr("axis").unwrap_or(0), t.dims.len())?;
            gather(&t, &idx, axis)?
        }
        "Unsqueeze" | "Squeeze" => {
            let t = x()?;
            let axes = input_ints(1)
                .or_else(|| ints_attr("axes"))
                .unwrap_or_default();
            squeeze(t, &axes, node.op_type == "Unsqueeze")?
        }
        other => bail!("`{other}` is not folded"),
    })
}

fn attr<'a>(node: &'a OnnxNode, name: &str) -> Option<&'a crate::assets::protobuf::OnnxAttribute> {
    node.attribute.iter().find(|a| a.name == name)
}

/// A possibly negative axis of a rank-`rank` tensor as an index.
fn axis_of(a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if !(-r..r).contains(&a) {
        bail!("axis {a} of a rank-{rank} tensor");
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// The multi-index of flat position `at` in `dims`.
fn unravel(mut at: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for i in (0..dims.len()).rev() {
        idx[i] = at % dims[i].max(1);
        at /= dims[i].max(1);
    }
    idx
}

fn broadcast(a: &Small, b: &Small, f: impl Fn(f64, f64) -> f64, int: bool) -> Result<Small> {
    let rank = a.dims.len().max(b.dims.len());
    let pad = |d: &[usize]| -> Vec<usize> {
        std::iter::repeat_n(1, rank - d.len())
            .chain(d.iter().copied())
            .collect()
    };
    let (da, db) = (pad(&a.dims), pad(&b.dims));
    let mut dims = Vec::with_capacity(rank);
    for (&p, &q) in da.iter().zip(&db) {
        dims.push(match (p, q) {
            (p, q) if p == q => p,
            (1, q) => q,
            (p, 1) => p,
            _ => bail!("shapes {:?} and {:?} do not broadcast", a.dims, b.dims),
        });
    }
    let (sa, sb) = (strides(&da), strides(&db));
    let at = |idx: &[usize], d: &[usize], s: &[usize]| -> usize {
        idx.iter()
            .zip(d)
            .zip(s)
            .map(|((&i, &n), &st)| if n == 1 { 0 } else { i * st })
            .sum()
    };
    let data = (0..dims.iter().product())
        .map(|k| {
            let idx = unravel(k, &dims);
            f(a.data[at(&idx, &da, &sa)], b.data[at(&idx, &db, &sb)])
        })
        .collect();
    Ok(Small { dims, data, int })
}

fn concat(parts: &[Small], axis: usize) -> Result<Small> {
    let mut dims = parts[0].dims.clone();
    let fits = |p: &Small| {
        p.dims.len() == dims.len()
            && (p.dims.iter().zip(&dims).enumerate()).all(|(a, (x, y))| a == axis || x == y)
    };
    if !parts.iter().all(fits) {
        bail!("joins tensors whose shapes differ off axis {axis}");
    }
    dims[axis] = parts.iter().map(|p| p.dims[axis]).sum();
    let outer: usize = dims[..axis].iter().product();
    let mut data = Vec::with_capacity(dims.iter().product());
    for o in 0..outer {
        for p in parts {
            let chunk: usize = p.dims[axis..].iter().product();
            data.extend_from_slice(&p.data[o * chunk..(o + 1) * chunk]);
        }
    }
    Ok(Small {
        dims,
        data,
        int: parts.iter().all(|p| p.int),
    })
}

fn reshape(t: Small, shape: &[i64]) -> Result<Small> {
    let total = t.data.len();
    let mut dims: Vec<usize> = Vec::with_capacity(shape.len());
    let mut free = None;
    for (i, &d) in shape.iter().enumerate() {
        dims.push(match d {
            0 => *t
                .dims
                .get(i)
                .ok_or_else(|| anyhow::anyhow!("a 0 past the rank"))?,
            -1 if free.is_none() => {
                free = Some(i);
                1
            }
            d if d > 0 => d as usize,
            d => bail!("a reshape to dimension {d}"),
        });
    }
    if let Some(i) = free {
        let known: usize = dims.iter().product();
        dims[i] = total / known.max(1);
    }
    if dims.iter().product::<usize>() != total {
        bail!("reshapes {total} values to {shape:?}");
    }
    Ok(Small { dims, ..t })
}

fn permute(t: &Small, perm: &[usize]) -> Result<Small> {
    let mut sorted = perm.to_vec();
    sorted.sort_unstable();
    if sorted != (0..t.dims.len()).collect::<Vec<_>>() {
        bail!("perm {perm:?} of a rank-{} tensor", t.dims.len());
    }
    let dims: Vec<usize> = perm.iter().map(|&p| t.dims[p]).collect();
    let s = strides(&t.dims);
    let data = (0..t.data.len())
        .map(|k| {
            let idx = unravel(k, &dims);
            t.data[idx.iter().zip(perm).map(|(&i, &p)| i * s[p]).sum::<usize>()]
        })
        .collect();
    Ok(Small {
        dims,
        data,
        int: t.int,
    })
}

fn slice(t: &Small, starts: &[i64], ends: &[i64], axes: &[i64], steps: &[i64]) -> Result<Small> {
    let rank = t.dims.len();
    if starts.len() != axes.len() || ends.len() != axes.len() || steps.len() != axes.len() {
        bail!(
            "a slice with {} starts, {} ends, {} axes and {} steps",
            starts.len(),
            ends.len(),
            axes.len(),
            steps.len()
        );
    }
    let mut ranges: Vec<Vec<usize>> = t.dims.iter().map(|&n| (0..n).collect()).collect();
    for (k, &a) in axes.iter().enumerate() {
        let axis = axis_of(a, rank)?;
        let n = t.dims[axis] as i64;
        let step = *steps.get(k).unwrap_or(&1);
        if step == 0 {
            bail!("a slice with step 0");
        }
        let clamp = |v: i64, lo: i64, hi: i64| {
            let v = if v < 0 { v + n } else { v };
            v.clamp(lo, hi)
        };
        let (start, end) = (starts[k], ends[k]);
        ranges[axis] = if step > 0 {
            let (s, e) = (clamp(start, 0, n), clamp(end, 0, n));
            (s..e).step_by(step as usize).map(|i| i as usize).collect()
        } else {
            let (s, e) = (clamp(start, -1, n - 1), clamp(end, -1, n - 1));
            let mut v = Vec::new();
            let mut i = s;
            while i > e {
                v.push(i as usize);
                i += step;
            }
            v
        };
    }
    let dims: Vec<usize> = ranges.iter().map(Vec::len).collect();
    let s = strides(&t.dims);
    let data = (0..dims.iter().product())
        .map(|k| {
            let idx = unravel(k, &dims);
            t.data[(idx.iter().enumerate())
                .map(|(a, &i)| ranges[a][i] * s[a])
                .sum::<usize>()]
        })
        .collect();
    Ok(Small {
        dims,
        data,
        int: t.int,
    })
}

fn gather(t: &Small, idx: &Small, axis: usize) -> Result<Small> {
    let Some(&n) = t.dims.get(axis) else {
        bail!(
            "gathers along axis {axis} of a rank-{} tensor",
            t.dims.len()
        );
    };
    let n = n as i64;
    let picks: Vec<usize> = (idx.ints().iter())
        .map(|&i| {
            let i = if i < 0 { i + n } else { i };
            if (0..n).contains(&i) {
                Ok(i as usize)
            } else {
                bail!("index {i} on an axis of {n}")
            }
        })
        .collect::<Result<_>>()?;
    let outer: usize = t.dims[..axis].iter().product();
    let inner: usize = t.dims[axis + 1..].iter().product();
    let mut data = Vec::new();
    for o in 0..outer {
        for &p in &picks {
            let at = (o * t.dims[axis] + p) * inner;
            data.extend_from_slice(&t.data[at..at + inner]);
        }
    }
    let dims = (t.dims[..axis].iter())
        .chain(&idx.dims)
        .chain(&t.dims[axis + 1..])
        .copied()
        .collect();
    Ok(Small {
        dims,
        data,
        int: t.int,
    })
}

fn squeeze(t: Small, axes: &[i64], unsqueeze: bool) -> Result<Small> {
    let mut dims = t.dims.clone();
    if unsqueeze {
        let rank = dims.len() + axes.len();
        let mut at: Vec<usize> = axes
            .iter()
            .map(|&a| axis_of(a, rank))
            .collect::<Result<_>>()?;
        at.sort_unstable();
        if at.windows(2).any(|w| w[0] == w[1]) {
            bail!("axes {axes:?} repeat an axis");
        }
        for a in at {
            dims.insert(a.min(dims.len()), 1);
        }
    } else if axes.is_empty() {
        dims.retain(|&d| d != 1);
    } else {
        let mut at: Vec<usize> = (axes.iter())
            .map(|&a| axis_of(a, dims.len()))
            .collect::<Result<_>>()?;
        at.sort_unstable();
        if at.windows(2).any(|w| w[0] == w[1]) {
            bail!("axes {axes:?} repeat an axis");
        }
        for a in at.into_iter().rev() {
            if dims[a] != 1 {
                bail!("squeezes an axis of {}", dims[a]);
            }
            dims.remove(a);
        }
    }
    Ok(Small { dims, ..t })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(dims: &[usize], v: &[i64]) -> Small {
        Small {
            dims: dims.to_vec(),
            data: v.iter().map(|&x| x as f64).collect(),
            int: true,
        }
    }

    #[test]
    fn the_shape_helpers_agree_with_numpy() {
        let t = ints(&[2, 3], &[0, 1, 2, 3, 4, 5]);
        assert_eq!(
            permute(&t, &[1, 0]).unwrap(),
            ints(&[3, 2], &[0, 3, 1, 4, 2, 5])
        );
        assert_eq!(
            slice(&t, &[1], &[i64::MAX], &[1], &[1]).unwrap(),
            ints(&[2, 2], &[1, 2, 4, 5])
        );
        assert_eq!(
            slice(&t, &[-1], &[-4], &[1], &[-1]).unwrap(),
            ints(&[2, 3], &[2, 1, 0, 5, 4, 3])
        );
        assert_eq!(
            gather(&t, &ints(&[], &[2]), 1).unwrap(),
            ints(&[2], &[2, 5])
        );
        assert_eq!(concat(&[t.clone(), t.clone()], 0).unwrap().dims, vec![4, 3]);
        assert_eq!(reshape(t.clone(), &[-1]).unwrap().dims, vec![6]);
        let b = broadcast(&t, &ints(&[3], &[10, 20, 30]), |p, q| p + q, true).unwrap();
        assert_eq!(b, ints(&[2, 3], &[10, 21, 32, 13, 24, 35]));
        let s = squeeze(ints(&[3], &[1, 2, 3]), &[0], true).unwrap();
        assert_eq!(s.dims, vec![1, 3]);
    }

    /// Every folded op on hostile constants and attributes (wild sizes, axes, indices,
    /// empty and scalar tensors): an answer or an error, never a panic or a huge allocation.
    #[test]
    fn hostile_constants_fold_or_fail() {
        use crate::assets::protobuf::OnnxAttribute;
        use rand::{Rng, SeedableRng};
        const WILD: [i64; 10] = [0, -1, 1, 2, 3, -3, 7, 1 << 40, i64::MAX, i64::MIN];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..20_000 {
            let mut small = || -> Option<Small> {
                if rng.random_range(0..6) == 0 {
                    return None;
                }
                let rank = rng.random_range(0..4);
                let dims: Vec<usize> = (0..rank).map(|_| rng.random_range(0..4)).collect();
                let n = dims.iter().product();
                let data = (0..n).map(|_| WILD[rng.random_range(0..WILD.len())] as f64);
                Some(Small {
                    dims,
                    data: data.collect(),
                    int: rng.random(),
                })
            };
            let ins: Vec<Option<Small>> = (0..5).map(|_| small()).collect();
            let mut attribute = Vec::new();
            for name in ["axis", "perm", "axes", "to", "value"] {
                if rng.random() {
                    let n = rng.random_range(0..5);
                    attribute.push(OnnxAttribute {
                        name: name.into(),
                        i: WILD[rng.random_range(0..WILD.len())],
                        ints: (0..n)
                            .map(|_| WILD[rng.random_range(0..WILD.len())])
                            .collect(),
                        t: ins[0].as_ref().map(|t| t.tensor("v")),
                        ..Default::default()
                    });
                }
            }
            let node = OnnxNode {
                op_type: FOLDED[rng.random_range(0..FOLDED.len())].into(),
                attribute,
                ..Default::default()
            };
            let n = rng.random_range(0..=5);
            let _ = fold(&node, &ins[..n]);
        }
    }
}
