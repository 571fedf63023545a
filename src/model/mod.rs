//! The network: a fixed, pretrained convolutional backbone and a small trained head.
//!
//! A network is a graph of [`Node`]s in topological order ([`network`]), built by one
//! builder per architecture ([`arch`]) from torchvision-named tensors. Every pass over it —
//! forward, the trace LRP's reverse pass reads, the stored prefix, cost — walks that one
//! structure; which channels prune together is the pruning plan's business (`prune::plan`).

pub mod arch;
pub mod classifier;
pub mod conv;
pub mod cost;
pub mod cpu_op;
pub mod export;
pub mod geometry;
pub mod gpu;
pub mod head;
pub mod layer;
pub mod load;
pub mod network;
pub mod pool;
pub mod precision;
pub mod prefix;
pub mod summary;
pub mod values;
pub mod weights;

pub use layer::{Conv, Linear, Op};
pub use network::{Network, Node};
