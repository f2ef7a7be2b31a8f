//! SM2/SM3/SM4 benchmarks (placeholder until the benchmark lands).

fn main() {}
