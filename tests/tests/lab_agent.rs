//! `enifab lab agent`'s API faced as an attacker or a careless caller would: names that are paths
//! or `..`, unknown pods, a CNI configuration that is no JSON object, a huge iptables text,
//! unknown tables and protocols, out-of-range ports and deadlines are refused with
//! `INVALID_ARGUMENT` (or `NOT_FOUND`), nothing is made, and the agent keeps serving; a real
//! probe from the node still works afterwards. Beyond loopback the agent refuses to listen
//! without credentials (unless `--insecure`), and with credentials every call must be signed
//! with them. Needs root (the agent runs for a namespace; skips otherwise); each test has its own
//! namespace prefix and socket, and guards that stop the agent and delete the namespace.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use enifab::cli::{AccessKey, SignedChannel};
use enifab::lab::netns;
use enifab_proto::v1 as pb;
use enifab_proto::v1::lab_agent_client::LabAgentClient;
use enifab_tests::{is_root, workspace_bin_dir};
use tonic::Code;

fn root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("SKIPPED {test}: the agent needs root (network namespaces)");
    false
}

/// An agent process and its node namespace; stopped and deleted when dropped.
struct Agent {
    child: Child,
    ns: String,
}

impl Agent {
    /// `enifab lab agent` for a fresh namespace, as an external host (its shim, which cannot
    /// reach the nowhere endpoint, is irrelevant here), with `extra` arguments and environment.
    fn start(test: &str, dir: &Path, listen: &str, env: &[(&str, &str)]) -> Agent {
        let ns = format!("efbagent-{}-{test}", std::process::id());
        netns::create(&ns).unwrap();
        let child = Command::new(workspace_bin_dir().join("enifab"))
            .args(["--endpoint", "127.0.0.1:1", "lab", "agent", "--external", "x", "--external-address"])
            .args(["47.100.1.10/24", "--netns", &ns, "--listen", listen])
            .arg("--shim-socket")
            .arg(dir.join("shim.sock"))
            .arg("--cni-state-dir")
            .arg(dir.join("cni"))
            .arg("--log-dir")
            .arg(dir)
            .env_remove("ENIFAB_ACCESS_KEY_ID")
            .env_remove("ENIFAB_ACCESS_KEY_SECRET")
            .env_remove("ENIFAB_ACCESS_KEY_FILE")
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Agent { child, ns }
    }

    /// The address its API listens on, from its log.
    fn listening(&mut self) -> String {
        let err = self.child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("agent API listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10)).expect("the agent says where it listens")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = netns::delete(&self.ns);
    }
}

async fn client(address: &str) -> LabAgentClient<SignedChannel> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = enifab::lab::agent::client::connect(address).unwrap();
    while c.describe_agent(pb::DescribeAgentRequest {}).await.is_err() {
        assert!(Instant::now() < deadline, "the agent at {address} does not answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c
}

#[track_caller]
fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>, code: Code, what: &str) {
    match r {
        Ok(v) => panic!("{what}: accepted: {v:?}"),
        Err(s) => assert_eq!(s.code(), code, "{what}: {s:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_the_agent_keeps_serving() {
    if !root("bad_requests_are_refused_and_the_agent_keeps_serving") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let agent = Agent::start("bad", dir.path(), &sock.display().to_string(), &[]);
    let mut c = client(&format!("unix:{}", sock.display())).await;
    // (Other tests make and delete namespaces meanwhile: look only at names these requests use.)
    let before = netns::list("efbagent-p");

    let pod = |netns: &str, container: &str, netconf: &str| pb::AgentAddPodRequest {
        netns: netns.into(),
        container_id: container.into(),
        cni_args: "K8S_POD_NAME=x".into(),
        netconf_json: netconf.into(),
    };
    const INVALID: Code = Code::InvalidArgument;
    for bad in ["../etc", "a/b", "..", ".", "", "-all", "x y"] {
        refused(c.add_pod(pod(bad, "c1", "{}")).await, INVALID, &format!("AddPod netns {bad:?}"));
    }
    refused(c.add_pod(pod("efbagent-p", "../c", "{}")).await, INVALID, "AddPod container ../c");
    refused(c.add_pod(pod("efbagent-p", "c1", "not json")).await, INVALID, "AddPod netconf not JSON");
    refused(c.add_pod(pod("efbagent-p", "c1", "[1, 2]")).await, INVALID, "AddPod netconf not an object");
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(100_000));
    refused(c.add_pod(pod("efbagent-p", "c1", &huge)).await, INVALID, "AddPod huge netconf");
    let r = c
        .delete_pod(pb::AgentDeletePodRequest {
            netns: "../../var/run/netns/x".into(),
            container_id: "c".into(),
            cni_args: String::new(),
            netconf_json: "{}".into(),
        })
        .await;
    refused(r, INVALID, "DeletePod with a path");

    let responders = |owner: &str, netns: &str, tcp: Vec<u32>| pb::StartRespondersRequest {
        owner: owner.into(),
        netns: netns.into(),
        tcp,
        udp: vec![],
        http: vec![],
    };
    refused(c.start_responders(responders("o", "no-such-pod", vec![80])).await, Code::NotFound, "unknown pod");
    refused(c.start_responders(responders("..", "", vec![80])).await, INVALID, "owner ..");
    refused(c.start_responders(responders("o", "", vec![0])).await, INVALID, "port 0");
    refused(c.start_responders(responders("o", "", vec![70000])).await, INVALID, "port 70000");
    refused(c.start_responders(responders("o", "", vec![])).await, INVALID, "no port");

    refused(c.read_iptables(pb::ReadIptablesRequest { table: "security".into() }).await, INVALID, "table");
    let apply = |restore: String, chain: &str| pb::ApplyIptablesRequest {
        restore,
        jumps: vec![pb::IptablesRule { table: "nat".into(), chain: chain.into(), args: vec!["-j".into(), "X".into()] }],
    };
    // Beyond the gRPC message limit or ours: refused either way, before iptables runs.
    let r = c.apply_iptables(apply("#".repeat(5 << 20), "PREROUTING")).await;
    assert!(r.is_err(), "a 5 MiB iptables text is refused");
    let r = c.apply_iptables(apply("#".repeat(3 << 20) + "\0", "PREROUTING")).await;
    refused(r, INVALID, "NUL in the restore text");
    refused(c.apply_iptables(apply(String::new(), "-F")).await, INVALID, "a chain that is an option");

    let probe = |netns: &str, address: &str, protocol: &str, port: u32, timeout_ms: u32| pb::AgentProbeRequest {
        netns: netns.into(),
        address: address.into(),
        protocol: protocol.into(),
        port,
        timeout_ms,
    };
    refused(c.probe(probe("", "not-an-ip", "tcp", 80, 0)).await, INVALID, "address");
    refused(c.probe(probe("", "10.0.0.1", "sctp", 80, 0)).await, INVALID, "protocol");
    refused(c.probe(probe("", "10.0.0.1", "tcp", 0, 0)).await, INVALID, "port 0");
    refused(c.probe(probe("", "10.0.0.1", "tcp", 80, 3_600_000)).await, INVALID, "an hour's deadline");
    refused(c.probe(probe("unknown-pod", "10.0.0.1", "tcp", 80, 0)).await, Code::NotFound, "unknown pod");
    refused(c.clean_up(pb::AgentCleanUpRequest { netns_prefix: "ef".into() }).await, INVALID, "short prefix");
    refused(c.clean_up(pb::AgentCleanUpRequest { netns_prefix: "../../x".into() }).await, INVALID, "prefix path");

    assert_eq!(netns::list("efbagent-p"), before, "no namespace was made or deleted");
    // Still serving, and a real probe from the node works: nothing listens on 127.0.0.1:1.
    let r = c.probe(probe("", "127.0.0.1", "tcp", 1, 500)).await.unwrap().into_inner();
    assert_eq!(r.outcome, "refused", "{r:?}");
    // An IPv6 address is probed too, not refused (whatever a host without IPv6 makes of it).
    let r = c.probe(probe("", "::1", "tcp", 1, 500)).await.expect("an IPv6 address is a probe's").into_inner();
    assert!(["refused", "blocked", "error"].contains(&r.outcome.as_str()), "{r:?}");
    let d = c.describe_agent(pb::DescribeAgentRequest {}).await.unwrap().into_inner();
    assert_eq!((d.role.as_str(), d.name.as_str()), ("external", "x"));
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_the_agent_needs_credentials_and_checks_them() {
    if !root("beyond_loopback_the_agent_needs_credentials_and_checks_them") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // No credentials, a wildcard address: it will not serve.
    let mut open = Agent::start("open", dir.path(), "0.0.0.0:0", &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = open.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the agent listens beyond loopback without credentials");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(open.child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("without credentials") && err.contains("--insecure"), "{err}");
    drop(open);

    // With an AccessKey: only calls signed with it are served.
    let key = AccessKey { id: "LTAIagenttest".into(), secret: "agent-test-secret".into() };
    let env = [("ENIFAB_ACCESS_KEY_ID", key.id.as_str()), ("ENIFAB_ACCESS_KEY_SECRET", key.secret.as_str())];
    let mut agent = Agent::start("signed", dir.path(), "0.0.0.0:0", &env);
    let port = agent.listening().rsplit(':').next().unwrap().to_string();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect_lazy();
    let as_ = |k: Option<AccessKey>| LabAgentClient::new(SignedChannel::new(channel.clone(), k));
    let wrong = AccessKey { secret: "guess".into(), ..key.clone() };
    let stranger = AccessKey { id: "LTAIsomeoneelse".into(), secret: "x".into() };
    for (who, k) in [("unsigned", None), ("a wrong secret", Some(wrong)), ("an unknown key", Some(stranger))] {
        let r = as_(k).describe_agent(pb::DescribeAgentRequest {}).await;
        refused(r, Code::Unauthenticated, who);
        let r = as_(None).clean_up(pb::AgentCleanUpRequest { netns_prefix: "efbnothing".into() }).await;
        refused(r, Code::Unauthenticated, "CleanUp unsigned");
    }
    let d = as_(Some(key)).describe_agent(pb::DescribeAgentRequest {}).await.expect("a signed call is served");
    assert_eq!(d.into_inner().role, "external");
    drop(agent);
}
