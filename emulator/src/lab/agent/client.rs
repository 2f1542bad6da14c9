//! The lab's side of an agent: a client for `enifab.v1.LabAgent` at an address as users write
//! one (`node-a:7070`, `http://node-a:7070`, `unix:/run/enifab/agent.sock` or a plain path),
//! signing every call with the process's AccessKey as the emulator's clients do
//! ([`crate::cli::SignedChannel`]). Connections are made on first use and again after a
//! failure, so a client can be made before its agent listens.

use std::time::Duration;

use anyhow::{Context, Result};
use enifab_proto::v1::lab_agent_client::LabAgentClient;
use hyper_util::rt::TokioIo;
use tonic::transport::Endpoint;

use crate::cli::{SignedChannel, access_key};

pub type AgentClient = LabAgentClient<SignedChannel>;

/// Where an agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// An `http://` (or `https://`) URL.
    Url(String),
    Unix(std::path::PathBuf),
}

impl Address {
    pub fn parse(s: &str) -> Result<Address> {
        let s = s.trim();
        if s.is_empty() {
            anyhow::bail!("an agent's address is empty");
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            return Ok(Address::Url(s.to_string()));
        }
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(Address::Unix(p.into()));
        }
        if s.starts_with('/') || s.starts_with('.') {
            return Ok(Address::Unix(s.into()));
        }
        Ok(Address::Url(format!("http://{s}")))
    }
}

/// A client for the agent at `address`; connects on first use.
pub fn connect(address: &str) -> Result<AgentClient> {
    let channel = match Address::parse(address)? {
        Address::Url(url) => Endpoint::from_shared(url.clone())
            .with_context(|| format!("the agent address {url:?}"))?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy(),
        Address::Unix(path) => Endpoint::from_static("http://agent.local")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let p = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
            })),
    };
    Ok(LabAgentClient::new(SignedChannel::new(channel, access_key())).max_decoding_message_size(16 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_users_write_them() {
        assert_eq!(Address::parse("node-a:7070").unwrap(), Address::Url("http://node-a:7070".into()));
        assert_eq!(Address::parse("http://10.0.0.2:7070").unwrap(), Address::Url("http://10.0.0.2:7070".into()));
        assert_eq!(Address::parse("unix:/run/a.sock").unwrap(), Address::Unix("/run/a.sock".into()));
        assert_eq!(Address::parse("/tmp/lab/agent.sock").unwrap(), Address::Unix("/tmp/lab/agent.sock".into()));
        assert!(Address::parse(" ").is_err());
    }
}
