//! `wsfleet bench`: the load tester.

/// Options of `wsfleet bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

/// Runs a benchmark.
pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("wsfleet bench is not built yet")
}
