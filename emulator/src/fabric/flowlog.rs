//! The flow logs' store: records the pipeline emits ([`enifab_dataplane::flowlog`]) with wall
//! times, kept in one ring of the newest [`KEEP`] for `enifab flowlog` and `DescribeFlowLogs`,
//! and broadcast to followers.
//!
//! Bounded both ways: the ring drops its oldest record when full, and a follower that falls
//! more than [`FOLLOW_LAG`] records behind loses the ones it missed (told by a gap in `seq`)
//! rather than holding memory or the I/O thread. Must not: block the I/O thread beyond one
//! short lock per round that has records.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use enifab_dataplane::flowlog::FlowRecord;
use enifab_dataplane::{Direction, Instant};
use enifab_proto::v1 as pb;
use tokio::sync::broadcast;

/// Records kept.
pub const KEEP: usize = 100_000;
/// How far a follower may fall behind.
pub const FOLLOW_LAG: usize = 16_384;

/// Flow logs on or off, and their capture window (`enifab serve --flow-logs`, `--flow-log-window`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLogSettings {
    pub enabled: bool,
    pub window: Duration,
}

impl Default for FlowLogSettings {
    fn default() -> Self {
        FlowLogSettings { enabled: true, window: Duration::from_secs(10) }
    }
}

impl FlowLogSettings {
    /// `ENIFAB_FLOW_LOGS=off` and `ENIFAB_FLOW_LOG_WINDOW=<seconds>` over the defaults.
    pub fn from_env() -> FlowLogSettings {
        let mut s = FlowLogSettings::default();
        if std::env::var("ENIFAB_FLOW_LOGS").is_ok_and(|v| v == "off") {
            s.enabled = false;
        }
        if let Some(w) = std::env::var("ENIFAB_FLOW_LOG_WINDOW").ok().and_then(|v| v.parse::<f64>().ok())
            && let Ok(d) = Duration::try_from_secs_f64(w)
        {
            s.window = d.max(Duration::from_millis(100));
        }
        s
    }
}

pub type Row = Arc<pb::FlowLogRecord>;

pub struct FlowLogStore {
    ring: Mutex<(u64, VecDeque<Row>)>,
    tx: broadcast::Sender<Row>,
    /// Wall time of the pipeline clock's zero.
    origin: Mutex<SystemTime>,
}

impl std::fmt::Debug for FlowLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowLogStore").finish_non_exhaustive()
    }
}

impl Default for FlowLogStore {
    fn default() -> Self {
        FlowLogStore {
            ring: Mutex::new((0, VecDeque::new())),
            tx: broadcast::channel(FOLLOW_LAG).0,
            origin: Mutex::new(SystemTime::now()),
        }
    }
}

impl FlowLogStore {
    /// The pipeline's clock starts now (the I/O thread calls this once, first).
    pub fn set_origin(&self, at: SystemTime) {
        *self.origin.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    /// Takes a round's records from the pipeline.
    pub fn push(&self, records: impl Iterator<Item = FlowRecord>) {
        let origin = *self.origin.lock().unwrap_or_else(|p| p.into_inner());
        let ms = |i: Instant| {
            (origin + Duration::from_nanos(i.0)).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
        };
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        for r in records {
            ring.0 += 1;
            let row = Arc::new(pb::FlowLogRecord {
                seq: ring.0,
                network_interface_id: r.eni.to_string(),
                direction: match r.direction {
                    Direction::Ingress => "in",
                    Direction::Egress => "out",
                }
                .into(),
                src_addr: r.tuple.src.to_string(),
                src_port: u32::from(r.tuple.src_port),
                dst_addr: r.tuple.dst.to_string(),
                dst_port: u32::from(r.tuple.dst_port),
                protocol: u32::from(r.tuple.protocol),
                action: r.action.as_str().into(),
                security_group_rule_id: r.rule.to_string(),
                packets: r.packets,
                bytes: r.bytes,
                start_ms: ms(r.start),
                end_ms: ms(r.end),
                vlan: r.vlan.map(u32::from).unwrap_or_default(),
            });
            if ring.1.len() >= KEEP {
                ring.1.pop_front();
            }
            ring.1.push_back(row.clone());
            // Nobody following is not an error.
            let _ = self.tx.send(row);
        }
    }

    /// The records kept for `eni` (all when empty), and a receiver of the ones after them.
    pub fn snapshot(&self, eni: &str) -> (Vec<Row>, broadcast::Receiver<Row>) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let rows = ring.1.iter().filter(|r| eni.is_empty() || r.network_interface_id == eni).cloned().collect();
        (rows, self.tx.subscribe())
    }
}
