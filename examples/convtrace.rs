use candle_core::{Device, Tensor};
fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (b, c, k, s) = (args[0], args[1], args[2], args[3]);
    let relu_in = args.get(4).copied().unwrap_or(1) == 1;
    let mut x = Tensor::randn(0f32, 1.0, (b, c, s, s), &Device::Cpu).unwrap();
    if relu_in {
        x = x.relu().unwrap();
    }
    let w = Tensor::randn(0f32, 0.05, (k, c, 3, 3), &Device::Cpu).unwrap();
    let bias = Tensor::randn(0f32, 0.05, k, &Device::Cpu).unwrap();
    for _ in 0..args.get(5).copied().unwrap_or(5) {
        let t = std::time::Instant::now();
        let _y = lrprune::model::conv::conv2d(&x, &w, Some(&bias), 1, 1, false).unwrap();
        let e = t.elapsed().as_secs_f64();
        eprintln!(
            "{:.1} ms {:.1} GFLOP/s",
            e * 1e3,
            2.0 * (b * c * k * 9 * s * s) as f64 / e / 1e9
        );
    }
}
