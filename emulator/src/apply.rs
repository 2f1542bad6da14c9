//! placeholder
use std::path::Path;
use std::process::ExitCode;
pub async fn run(_endpoint: &str, _file: &Path) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}
