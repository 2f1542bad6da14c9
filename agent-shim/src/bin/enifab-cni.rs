//! `enifab-cni`: the CNI plugin binary. See `enifab_shim::cni`.

use std::process::ExitCode;

use rscni_plugin::async_cni::Plugin;
use rscni_plugin::version::SpecVersion;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let plugin = Plugin::new(SpecVersion::new(1, 1, 0), vec![SpecVersion::new(1, 0, 0), SpecVersion::new(1, 1, 0)])
        .msg("enifab-cni: trunk pods on the enifab emulator (Terway's veth and vlan datapaths)");
    // The plugin writes the result or the CNI error JSON to stdout itself.
    match plugin.run(&enifab_shim::cni::EnifabCni).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
