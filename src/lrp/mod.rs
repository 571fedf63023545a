//! Layer-wise Relevance Propagation (Bach et al. 2015; Montavon et al. 2019) as an explicit
//! reverse pass, and the per-filter relevance that ranks filters for pruning
//! (Yeom et al. 2021, "Pruning by Explaining").

pub mod composite;
pub mod explain;
pub mod filters;
pub mod fused;
pub mod gradient;
pub mod propagate;
pub mod rules;
pub mod steps;

pub use composite::Composite;
pub use filters::FilterRelevance;
