//! Pruning: which channels must go together ([`Plan`]), which are alive ([`FilterMask`]),
//! how to realise that on a network
//! (zero-masking or physical compaction), how filters are ranked ([`Criterion`]) and how the
//! ranking turns into a sequence of masks ([`Schedule`]).

pub mod after_step;
pub mod compact;
pub mod controller;
pub mod criteria;
pub mod mask;
pub mod plan;
pub mod relevance;
pub mod schedule;
pub mod screen;
pub mod search;
pub mod select;
pub mod signal;
pub mod zeroed;

pub use criteria::{Criterion, ScoreInput};
pub use mask::FilterMask;
pub use plan::Plan;
pub use schedule::{Schedule, Step};
