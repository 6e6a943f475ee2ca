//! Two "hosts" as network namespaces for a test: each has a veth pair to the root
//! namespace (where Redis runs) and its own address; a fleet started through
//! [`NetNs::wrapper`] runs inside it. Removed on drop. `None` (with a message) where the
//! test may not create namespaces.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One namespace with its veth pair.
pub struct NetNs {
    /// Its name.
    pub name: String,
    /// The root side's address (what the namespace reaches Redis at).
    pub gateway: String,
    /// The namespace side's address (what its fleet listens on).
    pub addr: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetNs {
    /// Namespace `n` (0 or 1) of this test process: 10.23{n}.K.2 inside, .1 outside.
    pub fn create(n: u32) -> Option<Self> {
        let k = std::process::id() % 250;
        let name = format!("wsf{}n{n}", std::process::id());
        let (outer, inner) = (format!("wv{k}o{n}"), format!("wv{k}i{n}"));
        let gateway = format!("10.23{n}.{k}.1");
        let addr = format!("10.23{n}.{k}.2");
        if let Err(e) = ip(&["netns", "add", &name]) {
            eprintln!("SKIP: cannot create network namespaces here ({e}); run as root");
            return None;
        }
        let ns = Self {
            name,
            gateway,
            addr,
        };
        let setup = || -> Result<(), String> {
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            ip(&["link", "set", &inner, "netns", &ns.name])?;
            ip(&["addr", "add", &format!("{}/24", ns.gateway), "dev", &outer])?;
            ip(&["link", "set", &outer, "up"])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &ns.name, "ip"];
                all.extend_from_slice(args);
                ip(&all)
            };
            inside(&["addr", "add", &format!("{}/24", ns.addr), "dev", &inner])?;
            inside(&["link", "set", &inner, "up"])?;
            inside(&["link", "set", "lo", "up"])
        };
        if let Err(e) = setup() {
            eprintln!("SKIP: cannot set up the namespace's veth pair ({e})");
            return None;
        }
        Some(ns)
    }

    /// A script in `dir` that runs `bin` inside the namespace.
    pub fn wrapper(&self, dir: &Path, bin: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("in-{}", self.name));
        let script = format!("#!/bin/sh\nexec ip netns exec {} {bin} \"$@\"\n", self.name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair (both ends) with it.
        let _ = ip(&["netns", "del", &self.name]);
    }
}
