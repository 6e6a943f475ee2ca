//! `wsfleet bench`: the load tester (building blocks only; the modes come next).

#![allow(dead_code)]

mod args;
mod cpu;
mod report;
mod seq;
mod wire;
mod window;

pub use args::BenchArgs;

/// Runs a benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    args.mode.validate()?;
    anyhow::bail!("wsfleet bench modes are not built yet")
}
