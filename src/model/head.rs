//! The classifier head, trained on cached features of the fixed backbone.
//!
//! The backbone is never trained (the paper's setting: a fixed feature extractor). Features
//! are optionally standardised per dimension by an explicit [`Op::Standardize`], so that
//! removing a filter removes its standardised feature (its column of the first linear layer)
//! rather than feeding the head a raw zero far outside the training distribution.
//! Every random draw (init, dropout) comes from the seed.

use super::layer::{Linear, Op};
use crate::spec::{HeadSettings, InputNorm, Optimizer, SettingError};
use anyhow::{bail, Result};
use candle_core::{DType, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer as _, ParamsAdamW, SGD};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One optimiser update from a loss.
type OptimizerStep = Box<dyn FnMut(&Tensor) -> candle_core::Result<()>>;

/// Train a head on `features` (N, F) with `labels` (N,) u32; returns its layers.
pub fn train(
    features: &Tensor,
    labels: &Tensor,
    n_classes: usize,
    cfg: &HeadSettings,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Op>> {
    let (n, f) = features.dims2()?;
    let dev = features.device();
    if n == 0 {
        bail!("no training images for the head");
    }
    let (mean, std) = match cfg.input_norm {
        InputNorm::Standardize => moments(features)?,
        InputNorm::None => (
            Tensor::zeros((1, f), DType::F32, dev)?,
            Tensor::ones((1, f), DType::F32, dev)?,
        ),
    };
    let x = features.broadcast_sub(&mean)?.broadcast_div(&std)?;

    let mut sizes = vec![f];
    sizes.extend(&cfg.hidden);
    sizes.push(n_classes);
    let mut vars = Vec::new();
    for w in sizes.windows(2) {
        let bound = 1.0 / (w[0] as f64).sqrt();
        let mut uniform = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect()
        };
        let weight = Var::from_tensor(&Tensor::from_vec(uniform(w[0] * w[1]), (w[1], w[0]), dev)?)?;
        let bias = Var::from_tensor(&Tensor::from_vec(uniform(w[1]), w[1], dev)?)?;
        vars.push((weight, bias));
    }
    let params: Vec<Var> = vars
        .iter()
        .flat_map(|(w, b)| [w.clone(), b.clone()])
        .collect();
    let mut opt: OptimizerStep = match cfg.optimizer {
        Optimizer::Adam => {
            let mut o = AdamW::new(
                params,
                ParamsAdamW {
                    lr: cfg.lr,
                    weight_decay: cfg.weight_decay,
                    ..Default::default()
                },
            )?;
            Box::new(move |loss| o.backward_step(loss))
        }
        Optimizer::Sgd => {
            let mut o = SGD::new(params, cfg.lr)?;
            Box::new(move |loss| o.backward_step(loss))
        }
    };
    let forward = |rng: Option<&mut ChaCha8Rng>| -> Result<Tensor> {
        let mut rng = rng;
        let mut h = x.clone();
        for (i, (w, b)) in vars.iter().enumerate() {
            h = h
                .matmul(&w.as_tensor().t()?)?
                .broadcast_add(b.as_tensor())?;
            if i + 1 < vars.len() {
                h = h.relu()?;
                if let Some(rng) = rng.as_deref_mut().filter(|_| cfg.dropout > 0.0) {
                    h = dropout(&h, cfg.dropout, rng)?;
                }
            }
        }
        Ok(h)
    };
    for _ in 0..cfg.epochs {
        let h = forward(Some(&mut *rng))?;
        let loss = candle_nn::loss::cross_entropy(&h, labels)?;
        opt(&loss)?;
    }
    // A learning rate too large for the features sends the weights to inf or NaN; the
    // network's NaN logits would then be blamed on the checkpoint. The features were
    // checked finite before, so this is the head's training: say so, naming the key.
    if cfg.epochs > 0 && !all_finite(&forward(None)?)? {
        let why = format!(
            "`head.lr` = {}: training the head diverged (its outputs on the training features are NaN or infinite after {} epochs of {}) (fix: a smaller lr, e.g. lr = 0.01, the default)",
            number(cfg.lr),
            cfg.epochs,
            match cfg.optimizer {
                Optimizer::Adam => "adam",
                Optimizer::Sgd => "sgd",
            }
        );
        return Err(SettingError {
            key: "head.lr".into(),
            why,
        }
        .into());
    }

    let mut layers = Vec::new();
    if cfg.input_norm == InputNorm::Standardize {
        layers.push(standardize_op(&mean, &std)?);
    }
    for (i, (w, b)) in vars.iter().enumerate() {
        if i > 0 {
            layers.push(Op::Relu);
        }
        layers.push(Op::Linear(Linear {
            weight: w.as_tensor().detach(),
            bias: b.as_tensor().detach(),
        }));
    }
    Ok(layers)
}

/// `x` as a spec would write it: 1e308, not 309 digits.
fn number(x: f64) -> String {
    if x != 0.0 && !(1e-4..1e6).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

fn all_finite(t: &Tensor) -> Result<bool> {
    let v = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok(v.iter().all(|v| v.is_finite()))
}

/// Per-feature mean and standard deviation (ε = 1e-6 under the root) of `features` (N, F),
/// each (1, F).
fn moments(features: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let mean = features.mean_keepdim(0)?;
    let var = features.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?;
    Ok((mean, (var + 1e-6)?.sqrt()?))
}

fn standardize_op(mean: &Tensor, std: &Tensor) -> candle_core::Result<Op> {
    Ok(Op::Standardize {
        mean: mean.squeeze(0)?,
        inv_std: std.recip()?.squeeze(0)?,
    })
}

/// `head` (as [`train`] made it) with its standardisation re-estimated on `features`, the
/// training features of a pruned backbone; the linear layers are kept. Computed exactly as
/// at training, so on the intact backbone's features it returns the same head.
pub fn restandardize(head: &[Op], features: &Tensor) -> Result<Vec<Op>> {
    let (mean, std) = moments(features)?;
    let mut out = head.to_vec();
    match out.first_mut() {
        Some(first @ Op::Standardize { .. }) => *first = standardize_op(&mean, &std)?,
        _ => bail!("restandardize: the head has no standardisation (head.input_norm = \"none\")"),
    }
    Ok(out)
}

fn dropout(h: &Tensor, p: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let keep = 1.0 - p;
    let mask: Vec<f32> = (0..h.elem_count())
        .map(|_| {
            if rng.random::<f64>() < keep {
                (1.0 / keep) as f32
            } else {
                0.0
            }
        })
        .collect();
    Ok((h * Tensor::from_vec(mask, h.shape(), h.device())?)?)
}
