//! `enifab-cni` as a container runtime drives it: the real binary, `CNI_*` in the environment,
//! the network configuration on stdin, against a real emulator (in-process) and a real node
//! shim (child process) for a node namespace. Both datapaths: ADD, CHECK, DEL; ADD twice and DEL
//! twice; DEL of a container it never saw; GC with and without the runtime's list of valid
//! attachments; bad configurations and cloud errors as CNI error JSON with a code; VERSION and
//! STATUS. Needs root (skips otherwise).

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use enifab::actor::SystemClock;
use enifab::cli::Clients;
use enifab::serve::{Emulator, ServeConfig};
use enifab_model::TransitionDelays;
use enifab_proto::v1 as pb;
use serde_json::{Value, json};
use support::{Netns, cni, eventually, privileged};

struct Cluster {
    clients: Clients,
    endpoint: String,
    instance: String,
    trunk: String,
    vsw: String,
    tiny_vsw: String,
    sg: String,
    node: Netns,
    shim: Child,
    dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.shim.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if eventually(10, || self.shim.try_wait().ok().flatten()).is_none() {
            let _ = self.shim.kill();
            let _ = self.shim.wait();
        }
    }
}

fn ok<T>(r: Result<tonic::Response<T>, tonic::Status>) -> T {
    r.expect("API call").into_inner()
}

async fn cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServeConfig {
        delays: TransitionDelays { attach_ms: 30, detach_ms: 30, delete_ms: 10, start_stop_ms: 10 },
        ..ServeConfig::loopback(dir.path().join("data"))
    };
    let emu = Emulator::open(&cfg, Arc::new(SystemClock)).unwrap();
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(emu.run(listener, async move {
        let _ = stopped.await;
    }));
    let mut c = Clients::new(enifab::cli::connect(&addr.to_string()).await.unwrap());
    let vpc =
        ok(c.vpc.create_vpc(pb::CreateVpcRequest { cidr_block: "10.0.0.0/8".into(), ..Default::default() }).await)
            .vpc_id;
    let vswitch = |cidr: &str| pb::CreateVSwitchRequest {
        vpc_id: vpc.clone(),
        zone_id: "cn-hongkong-b".into(),
        cidr_block: cidr.into(),
        ..Default::default()
    };
    let vsw = ok(c.vpc.create_v_switch(vswitch("10.0.4.0/24")).await).v_switch_id;
    let tiny_vsw = ok(c.vpc.create_v_switch(vswitch("10.0.9.0/29")).await).v_switch_id;
    let sg =
        ok(c.ecs.create_security_group(pb::CreateSecurityGroupRequest { vpc_id: vpc, ..Default::default() }).await)
            .security_group_id;
    let instance = ok(c
        .ecs
        .create_instance(pb::CreateInstanceRequest {
            instance_type: "ecs.g7.xlarge".into(),
            v_switch_id: vsw.clone(),
            security_group_ids: vec![sg.clone()],
            private_ip_address: "10.0.4.22".into(),
            ..Default::default()
        })
        .await)
    .instance_id;
    let trunk = ok(c
        .ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            v_switch_id: vsw.clone(),
            security_group_ids: vec![sg.clone()],
            instance_type: "Trunk".into(),
            ..Default::default()
        })
        .await)
    .network_interface_id;
    ok(c.ecs
        .attach_network_interface(pb::AttachNetworkInterfaceRequest {
            instance_id: instance.clone(),
            network_interface_id: trunk.clone(),
            ..Default::default()
        })
        .await);
    let node = Netns::new("cninode");
    let log = std::fs::File::create(dir.path().join("shim.log")).unwrap();
    let shim = Command::new(env!("CARGO_BIN_EXE_enifab-shim"))
        .args(["--endpoint", &addr.to_string(), "--instance-id", &instance, "--netns", &node.name])
        .arg("--control-socket")
        .arg(dir.path().join("shim.sock"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // The shim has plugged the trunk in when eth1 exists.
    assert!(eventually(20, || node.link("eth1")).is_some(), "the shim did not create eth1");
    Cluster { clients: c, endpoint: addr.to_string(), instance, trunk, vsw, tiny_vsw, sg, node, shim, dir, _stop: stop }
}

impl Cluster {
    fn netconf(&self, datapath: &str) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "enifab-test",
            "type": "enifab-cni",
            "endpoint": self.endpoint,
            "instanceId": self.instance,
            "nodeNetns": self.node.path(),
            "shimSocket": self.dir.path().join("shim.sock"),
            "datapath": datapath,
            "vSwitchId": self.vsw,
            "securityGroupIds": [self.sg],
            "stateDir": self.dir.path().join("cni-state"),
        })
    }
}

async fn members(c: &mut Clients) -> Vec<pb::NetworkInterfaceSet> {
    ok(c.ecs
        .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
            r#type: "Member".into(),
            ..Default::default()
        })
        .await)
    .network_interface_sets
    .unwrap_or_default()
    .network_interface_set
}

fn run(ns: &Netns, args: &[&str]) -> Vec<Value> {
    match ns.ip_json(args) {
        Value::Array(v) => v,
        _ => Vec::new(),
    }
}

async fn full_life(datapath: &str) {
    let mut cl = cluster().await;
    let pod = Netns::new("cnipod");
    let conf = cl.netconf(datapath);
    let args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;ENIFAB_IP=10.0.4.30";

    let (ok1, first, err) = cni("ADD", "c-web", Some(&pod.path()), args, &conf);
    assert!(ok1, "ADD failed: {first} {err}");
    assert_eq!(first["cniVersion"], "1.0.0");
    let ip = first["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.0.4.30/"), "{first}");
    let m = members(&mut cl.clients).await;
    assert_eq!(m.len(), 1, "one member ENI");
    let member = &m[0];
    assert_eq!((member.status.as_str(), member.private_ip_address.as_str()), ("InUse", "10.0.4.30"));
    let att = member.attachment.clone().unwrap();
    assert_eq!(att.trunk_network_interface_id, cl.trunk);
    let tags: Vec<(String, String)> =
        member.tags.clone().unwrap().tag.into_iter().map(|t| (t.tag_key, t.tag_value)).collect();
    assert!(tags.contains(&("creator".into(), "terway-controller".into())), "{tags:?}");

    // The pod's side: eth0 with the pod IP, a default route.
    let addrs = pod.ipv4_addrs("eth0");
    assert!(addrs.iter().any(|a| a.starts_with("10.0.4.30")), "{addrs:?}");
    let routes = run(&pod, &["route", "show", "default"]);
    assert_eq!(routes.len(), 1, "{routes:?}");
    match datapath {
        "veth" => {
            assert_eq!(routes[0]["gateway"], "169.254.1.1");
            // Super-frames no bigger than the trunk TAP takes, or the node would cut them up.
            assert_eq!(pod.ip_json(&["-d", "link", "show", "eth0"])[0]["gso_max_size"], 65000);
            // The node's side: the host veth, the route to the pod, Terway's two rules and the
            // member's table.
            let host = first["interfaces"][0]["name"].as_str().unwrap().to_string();
            assert!(host.starts_with("cali") && cl.node.link(&host).is_some(), "{first}");
            let to_pod = run(&cl.node, &["route", "show", "10.0.4.30"]);
            assert_eq!(to_pod[0]["dev"], host.as_str());
            let rules = run(&cl.node, &["rule", "show"]);
            let pref = |p: u64| rules.iter().find(|r| r["priority"] == p).cloned().unwrap_or(Value::Null);
            assert_eq!(pref(512)["dst"], "10.0.4.30", "{rules:?}");
            assert_eq!(pref(512)["table"], "main");
            assert_eq!(pref(2048)["src"], "10.0.4.30");
            let table = pref(2048)["table"].as_str().unwrap().to_string();
            let t = run(&cl.node, &["route", "show", "table", &table]);
            assert_eq!((t[0]["gateway"].as_str(), t[0]["dev"].as_str()), (Some("10.0.4.253"), Some("eth1")), "{t:?}");
        }
        _ => {
            assert_eq!(routes[0]["gateway"], "10.0.4.253");
            // The sub-interface carries the trunk's MAC, like eth1.<vid> would.
            let trunk_mac = cl.node.link("eth1").unwrap()["address"].clone();
            assert_eq!(pod.link("eth0").unwrap()["address"], trunk_mac);
        }
    }

    // CHECK passes; ADD again changes nothing and answers the same.
    let (ok_check, out, err) = cni("CHECK", "c-web", Some(&pod.path()), args, &conf);
    assert!(ok_check, "CHECK: {out} {err}");
    let (ok2, second, err) = cni("ADD", "c-web", Some(&pod.path()), args, &conf);
    assert!(ok2, "second ADD: {second} {err}");
    assert_eq!(second["ips"], first["ips"]);
    assert_eq!(members(&mut cl.clients).await.len(), 1, "no second member ENI");

    // DEL removes links and the ENI; DEL again is fine.
    let (ok3, out, err) = cni("DEL", "c-web", Some(&pod.path()), args, &conf);
    assert!(ok3, "DEL: {out} {err}");
    assert!(members(&mut cl.clients).await.is_empty(), "the member ENI is gone");
    assert!(pod.link("eth0").is_none(), "the pod's eth0 is gone");
    if datapath == "veth" {
        let rules = run(&cl.node, &["rule", "show"]);
        assert!(!rules.iter().any(|r| r["priority"] == 512 || r["priority"] == 2048), "{rules:?}");
    }
    let (ok4, out, err) = cni("DEL", "c-web", Some(&pod.path()), args, &conf);
    assert!(ok4, "second DEL: {out} {err}");
    // CHECK of a deleted container says so.
    let (ok5, out, _) = cni("CHECK", "c-web", Some(&pod.path()), args, &conf);
    assert!(!ok5);
    assert_eq!(out["code"], 3, "{out}");
}

/// GC (CNI 1.1): a container the runtime no longer lists loses its wiring and member ENI, also
/// one whose state file was lost; a listed one keeps both; without a list nothing is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_releases_what_the_runtime_no_longer_lists() {
    if !privileged("gc_releases_what_the_runtime_no_longer_lists") {
        return;
    }
    let mut cl = cluster().await;
    let conf = cl.netconf("veth");
    let pods = [Netns::new("gckeep"), Netns::new("gcstale"), Netns::new("gclost")];
    for (i, (container, pod)) in ["c-keep", "c-stale", "c-lost"].iter().zip(&pods).enumerate() {
        let args = format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME=p{i};ENIFAB_IP=10.0.4.{}", 30 + i);
        let (ok, out, err) = cni("ADD", container, Some(&pod.path()), &args, &conf);
        assert!(ok, "ADD {container}: {out} {err}");
    }
    assert_eq!(members(&mut cl.clients).await.len(), 3);
    let state = cl.dir.path().join("cni-state");
    std::fs::remove_file(state.join("c-lost.json")).expect("c-lost has a state file");

    let gc = |valid: Option<&[&str]>| {
        let mut c = conf.clone();
        c["cniVersion"] = json!("1.1.0");
        if let Some(v) = valid {
            let list: Vec<Value> = v.iter().map(|id| json!({"containerID": id, "ifname": "eth0"})).collect();
            c["cni.dev/valid-attachments"] = json!(list);
        }
        cni("GC", "", None, "", &c)
    };
    let (ok, out, err) = gc(None);
    assert!(ok, "GC without a list: {out} {err}");
    assert_eq!(members(&mut cl.clients).await.len(), 3, "nothing released without the runtime's list");

    let (ok, out, err) = gc(Some(&["c-keep"]));
    assert!(ok, "GC: {out} {err}");
    let left = members(&mut cl.clients).await;
    let ips: Vec<&str> = left.iter().map(|m| m.private_ip_address.as_str()).collect();
    assert_eq!(ips, ["10.0.4.30"], "only c-keep's member ENI stays");
    let rules = run(&cl.node, &["rule", "show"]);
    let to = |ip: &str| rules.iter().any(|r| r["dst"] == ip);
    assert!(to("10.0.4.30") && !to("10.0.4.31"), "c-stale unwired, c-keep not: {rules:?}");
    assert!(pods[1].link("eth0").is_none(), "c-stale's veth is gone");
    assert!(pods[0].link("eth0").is_some(), "c-keep's veth stays");
    let mut files: Vec<String> =
        std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, ["c-keep.json"]);

    // GC again finds nothing more to do; the listed pod still passes CHECK.
    let (ok, out, err) = gc(Some(&["c-keep"]));
    assert!(ok, "second GC: {out} {err}");
    let args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p0;ENIFAB_IP=10.0.4.30";
    let (ok, out, err) = cni("CHECK", "c-keep", Some(&pods[0].path()), args, &conf);
    assert!(ok, "CHECK c-keep after GC: {out} {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn veth_datapath_add_check_del() {
    if !privileged("veth_datapath_add_check_del") {
        return;
    }
    full_life("veth").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vlan_datapath_add_check_del() {
    if !privileged("vlan_datapath_add_check_del") {
        return;
    }
    full_life("vlan").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_cni_error_json_with_codes() {
    if !privileged("errors_are_cni_error_json_with_codes") {
        return;
    }
    let mut cl = cluster().await;
    let pod = Netns::new("cnierr");
    let conf = cl.netconf("veth");

    // DEL of a container never seen: success.
    let (ok_del, out, err) = cni("DEL", "never-seen", Some(&pod.path()), "", &conf);
    assert!(ok_del, "{out} {err}");

    // A configuration the plugin cannot use: code 7.
    let mut bad = conf.clone();
    bad["datapath"] = json!("macvlan");
    let (ok_bad, out, _) = cni("ADD", "c-bad", Some(&pod.path()), "", &bad);
    assert!(!ok_bad);
    assert_eq!(out["code"], 7, "{out}");
    let mut missing = conf.clone();
    missing.as_object_mut().unwrap().remove("endpoint");
    let (_, out, _) = cni("ADD", "c-bad", Some(&pod.path()), "", &missing);
    assert_eq!(out["code"], 7, "{out}");

    // A cloud error names the cloud's code: a /29 holds four addresses.
    for i in 0..4 {
        ok(cl
            .clients
            .ecs
            .create_network_interface(pb::CreateNetworkInterfaceRequest {
                v_switch_id: cl.tiny_vsw.clone(),
                security_group_ids: vec![cl.sg.clone()],
                description: format!("filler {i}"),
                ..Default::default()
            })
            .await);
    }
    let (ok_full, out, _) = cni("ADD", "c-full", Some(&pod.path()), &format!("ENIFAB_VSWITCH={}", cl.tiny_vsw), &conf);
    assert!(!ok_full);
    assert_eq!(out["code"], 100, "{out}");
    assert_eq!(out["msg"], "InvalidVSwitchId.IpNotEnough", "{out}");
    assert!(members(&mut cl.clients).await.is_empty());

    // A pod IP someone else holds: the cloud's code again.
    let (_, out, _) = cni("ADD", "c-dup", Some(&pod.path()), "ENIFAB_IP=10.0.4.22", &conf);
    assert_eq!(out["msg"], "InvalidPrivateIpAddress.Duplicated", "{out}");

    // An emulator that does not answer: try again later.
    let mut gone = conf.clone();
    gone["endpoint"] = json!("127.0.0.1:1");
    let (_, out, _) = cni("ADD", "c-gone", Some(&pod.path()), "", &gone);
    assert_eq!(out["code"], 11, "{out}");

    // VERSION and STATUS.
    let (ok_v, out, _) = cni("VERSION", "", None, "", &json!({"cniVersion": "1.0.0"}));
    assert!(ok_v);
    let versions: Vec<&str> =
        out["supportedVersions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(versions.contains(&"1.0.0") && versions.contains(&"1.1.0"), "{out}");
    let mut status_conf = conf.clone();
    status_conf["cniVersion"] = json!("1.1.0");
    let (ok_s, out, err) = cni("STATUS", "", None, "", &status_conf);
    assert!(ok_s, "{out} {err}");
    gone["cniVersion"] = json!("1.1.0");
    let (ok_s, out, _) = cni("STATUS", "", None, "", &gone);
    assert!(!ok_s);
    assert_eq!(out["code"], 50, "{out}");
}
