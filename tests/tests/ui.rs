//! The topology page (`/ui/`) in a real browser against a running lab: Debian's Chromium, headless,
//! loads the page from the in-process emulator while the SOP example's lab is up, and the DOM it
//! built must show every instance, every member ENI and its VLAN id as the model reports them
//! (DescribeInstances and DescribeNetworkInterfaces, not a list written here), with live counters
//! on the nodes' ports; a screenshot must be a real picture, not an empty page. A trace given in
//! the page's URL for a check the example expects blocked is drawn with its blocking hop marked.
//! Needs root (the lab) and `chromium` (`.ci/run` installs it); skips without root. Every browser
//! has its own profile directory; the lab has its own id and a guard.

#[path = "support/lab_guard.rs"]
mod lab_guard;

use std::path::{Path, PathBuf};
use std::time::Duration;

use enifab::lab;
use enifab_proto::v1 as pb;
use enifab_tests::{FullEmulator, is_root};
use lab_guard::{LabGuard, processes_of};

/// Runs headless Chromium with `args` and the URL; its stdout. The profile lives in `dir`.
async fn chromium(dir: &Path, url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir_in(dir).unwrap();
    let mut cmd = tokio::process::Command::new("chromium");
    cmd.args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--virtual-time-budget=5000"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("chromium (Debian's package; .ci/run installs it)");
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("chromium finished within 90 s")
        .unwrap();
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn example_copy(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/terway-trunk-sop/topology.yaml");
    let dst = dir.join("ui-sop.yaml");
    std::fs::copy(src, &dst).unwrap();
    dst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_draws_the_running_sop_lab() {
    if !is_root() {
        eprintln!("SKIPPED the_page_draws_the_running_sop_lab: the lab needs root");
        return;
    }
    let mut env = FullEmulator::start().await;
    let file = example_copy(env.dir.path());
    let guard = LabGuard::new(&file);
    let opts = env.lab_options();
    let mut log = Vec::new();
    if let Err(e) = lab::up(&opts, &file, &mut |l| log.push(l)).await {
        let _ = lab::down(&opts, &file, &mut |_| {}).await;
        panic!("lab up failed: {e:#}\n{}", log.join("\n"));
    }
    let checks = async {
        let enis = env
            .clients
            .ecs
            .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
                page_size: Some(500),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .network_interface_sets
            .unwrap_or_default()
            .network_interface_set;
        let instances = env
            .clients
            .ecs
            .describe_instances(pb::DescribeInstancesRequest { page_size: Some(100), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .instances
            .unwrap_or_default()
            .instance;
        let url = format!("http://{}/ui/", env.endpoint);
        let dom = chromium(env.dir.path(), &url, &["--dump-dom"]).await;

        assert_eq!(instances.len(), 3, "the SOP example has three nodes");
        for i in &instances {
            assert!(dom.contains(&format!("data-instance=\"{}\"", i.instance_id)), "node {} drawn", i.instance_id);
            assert!(dom.contains(&i.instance_name), "node name {} shown", i.instance_name);
        }
        let members: Vec<_> = enis.iter().filter(|e| e.r#type == "Member").collect();
        assert_eq!(members.len(), 6, "the SOP example has six pods on member ENIs");
        for m in &members {
            let att = m.attachment.as_ref().expect("a member is attached");
            let vlan = att.device_index;
            // The member's group on the page carries its VLAN id, and shows it in text.
            let at = dom
                .find(&format!("data-eni=\"{}\" data-kind=\"Member\" data-vlan=\"{vlan}\"", m.network_interface_id))
                .unwrap_or_else(|| panic!("member {} with VLAN {vlan} drawn", m.network_interface_id));
            let element = &dom[at..dom[at..].find("</g>").map_or(dom.len(), |e| at + e)];
            assert!(element.contains(&format!(">VLAN {vlan}<")), "VLAN {vlan} shown on {}", m.network_interface_id);
            assert!(element.contains(&m.private_ip_address), "{} shown", m.private_ip_address);
            assert!(element.contains("data-rx-frames="), "{} has its own counters", m.network_interface_id);
            assert!(dom.contains(&format!("data-eni=\"{}\" data-kind=\"Trunk\"", att.trunk_network_interface_id)));
        }
        // The counters were polled: every node's NICs and every member have their frame counts.
        assert!(dom.matches("data-rx-frames=").count() >= 12, "counters on the nodes' NICs and the members");
        assert!(dom.contains("live · "), "the page says it is live");
        // The load balancer the lab's CCM made, with its VIP.
        assert!(dom.contains("8.210.162.178"), "the CLB's VIP is drawn");

        // A check the example expects blocked (client-web's group may not enter centos's
        // enterprise group, which admits nothing by default), traced from the page's URL.
        let centos = members
            .iter()
            .find(|m| m.private_ip_address == "10.0.4.51")
            .expect("centos's member ENI at 10.0.4.51 (the example's address)");
        let traced = chromium(
            env.dir.path(),
            &format!("{url}?trace_from=client-web&trace_to={}&protocol=tcp&port=80", centos.network_interface_id),
            &["--dump-dom"],
        )
        .await;
        assert!(traced.contains("data-verdict=\"dropped\""), "the trace is drawn as dropped");
        assert_eq!(
            traced.matches("<li data-kind=\"sg_ingress\" data-hop-blocked=\"true\"").count(),
            1,
            "the hop list marks the ingress hop"
        );
        assert!(traced.contains(&format!("data-eni=\"{}\"", centos.network_interface_id)));
        assert!(
            traced.contains("class=\"member-box hop-blocked\" data-hop-blocked=\"true\""),
            "the picture marks the blocked member"
        );

        let png = env.dir.path().join("ui.png");
        chromium(
            env.dir.path(),
            &url,
            &[&format!("--screenshot={}", png.display()), "--window-size=1400,1000", "--hide-scrollbars"],
        )
        .await;
        let bytes = std::fs::read(&png).expect("a screenshot");
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
        // An empty 1400×1000 page compresses to a few kB; the drawn topology is well over 50.
        assert!(bytes.len() > 50_000, "the screenshot has a picture in it ({} bytes)", bytes.len());
        if let Ok(keep) = std::env::var("ENIFAB_UI_SCREENSHOT") {
            std::fs::copy(&png, keep).unwrap();
        }

        // `lab check --html`: the table and the topology in one file that needs no server.
        let row = lab::CheckRow {
            name: "client-web to centos".into(),
            scenario: Some(3),
            what: "client-web → centos http/80".into(),
            path: "VPC in: node .20/eth1 | out: - | dropped: security_group_ingress".into(),
            expected: "blocked".into(),
            got: "blocked".into(),
            passed: true,
            detail: String::new(),
            answered: None,
            trace: None,
        };
        let report = env.dir.path().join("report.html");
        enifab::ui::report::write(&env.endpoint, &file, &[row], &report).await.expect("the report is written");
        let html = std::fs::read_to_string(&report).unwrap();
        assert!(!html.contains("<script src=") && !html.contains("rel=\"stylesheet\""), "self-contained");
        let shown = chromium(env.dir.path(), &format!("file://{}", report.display()), &["--dump-dom"]).await;
        assert!(shown.contains("client-web to centos"), "the check table is in the report");
        for m in &members {
            assert!(
                shown.contains(&format!("data-eni=\"{}\"", m.network_interface_id)),
                "{} drawn",
                m.network_interface_id
            );
        }
    };
    // Down also when an assertion failed (the guard would clean the host, not the lab's state).
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(checks)).await;
    let _ = lab::down(&opts, &file, &mut |_| {}).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert!(processes_of(&guard.id).is_empty(), "the lab's processes are gone");
}
