//! The network: a fixed, pretrained convolutional backbone and a small trained head.
//!
//! A network is a flat list of [`Layer`]s (like torchvision's `features` + `classifier`), which
//! keeps three things simple: recording each layer's input for LRP's reverse pass, walking the
//! layers to compact pruned filters, and counting parameters and FLOPs.

pub mod classifier;
pub mod conv;
pub mod convert;
pub mod cost;
pub mod cpu_op;
pub mod export;
pub mod head;
pub mod layer;
pub mod network;
pub mod pool;
pub mod prefix;
pub mod summary;
pub mod vgg;
pub mod weights;

pub use layer::{Conv, Layer, Linear};
pub use network::Network;
