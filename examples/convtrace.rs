use candle_core::{Device, Tensor};
fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (b, c, k, s) = (args[0], args[1], args[2], args[3]);
    let x = Tensor::randn(0f32, 1.0, (b, c, s, s), &Device::Cpu)
        .unwrap()
        .relu()
        .unwrap();
    let bias = Tensor::randn(0f32, 0.05, k, &Device::Cpu).unwrap();
    let ws: Vec<Tensor> = (0..8)
        .map(|_| Tensor::randn(0f32, 0.05, (k, c, 3, 3), &Device::Cpu).unwrap())
        .collect();
    let flop = 2.0 * (b * c * k * 9 * s * s) as f64;
    for cold in [false, true] {
        let mut best = f64::MAX;
        for i in 0..8 {
            let w = if cold { &ws[i] } else { &ws[0] };
            let t = std::time::Instant::now();
            let _y = lrprune::model::conv::conv2d(&x, w, Some(&bias), 1, 1, false).unwrap();
            best = best.min(t.elapsed().as_secs_f64());
        }
        eprintln!(
            "{} {:.1} ms {:.1} GFLOP/s",
            if cold { "cold" } else { "warm" },
            best * 1e3,
            flop / best / 1e9
        );
    }
}
