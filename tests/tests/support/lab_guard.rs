//! A guard for tests that bring a lab up: dropped (also on a panic), it stops the lab's shims and
//! responders and deletes its namespaces, found by the lab's unique prefix (`efb<id>-`), so a
//! failing test leaves nothing on the machine. The cloud side lives in the test's in-process
//! emulator and goes with it.

use std::path::Path;

use enifab::lab;

pub struct LabGuard {
    pub id: String,
}

impl LabGuard {
    pub fn new(file: &Path) -> LabGuard {
        LabGuard { id: lab::lab_id(file) }
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = lab::remove_host_leftovers(&self.id);
    }
}

/// Processes (not zombies) whose command line names the lab's namespaces.
pub fn processes_of(id: &str) -> Vec<u32> {
    let needle = format!("efb{id}-");
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
                .into_owned();
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "));
            cmd.contains(&needle) && !zombie
        })
        .collect()
}
