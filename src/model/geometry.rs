//! Sizes and windows the model's ops share: a conv's padding, a pool's window, a value's
//! shape. A leaf module: the layers, the conv kernels, the pools and the graph all read it,
//! and it reads none of them.

/// Zero padding of a conv: (top, bottom) and (left, right). TF-"SAME" convs pad
/// asymmetrically; torchvision's are symmetric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pad2d {
    pub h: (usize, usize),
    pub w: (usize, usize),
}

impl Pad2d {
    pub fn same(p: usize) -> Self {
        Self {
            h: (p, p),
            w: (p, p),
        }
    }
    /// The padding when it is the same on all four sides.
    pub fn symmetric(&self) -> Option<usize> {
        let p = self.h.0;
        (self.h == (p, p) && self.w == (p, p)).then_some(p)
    }
}

/// A pooling window: square `kernel`, `stride`, and `padding` (before, after) on both
/// spatial axes (after > before where a converted graph pads only the far edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub kernel: usize,
    pub stride: usize,
    pub padding: (usize, usize),
}

impl Window {
    /// A window padded alike on both sides.
    pub fn new(kernel: usize, stride: usize, padding: usize) -> Self {
        Self {
            kernel,
            stride,
            padding: (padding, padding),
        }
    }
    pub fn out_size(&self, n: usize) -> usize {
        (n + self.padding.0 + self.padding.1).saturating_sub(self.kernel) / self.stride + 1
    }
}

/// The shape of a value: a feature map or a flat vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Map { c: usize, h: usize, w: usize },
    Flat(usize),
}

impl Shape {
    /// Numbers in one image's value of this shape.
    pub fn elements(&self) -> usize {
        match *self {
            Shape::Map { c, h, w } => c * h * w,
            Shape::Flat(n) => n,
        }
    }
    /// Channels of a map; a vector's features.
    pub fn channels(&self) -> usize {
        match *self {
            Shape::Map { c, .. } => c,
            Shape::Flat(n) => n,
        }
    }
}
