//! `enifab capture`: the client side of `Fabric.CaptureFrames`, the frames of a port written as a
//! capture file (pcapng, or classic pcap) for tshark or Wireshark.
//!
//! One pcapng interface holds every frame: Ethernet (`LINKTYPE_ETHERNET`) as on the trunk, a
//! member's 802.1Q tag in it, or with `--outer` IPv4 packets (`LINKTYPE_RAW`) around the Geneve
//! datagrams, the fabric's end at UDP 6081 so that dissectors decode Geneve. Timestamps are in
//! nanoseconds (`if_tsresol` 9). The direction is each Enhanced Packet Block's flags word, seen from
//! the port as tcpdump on the node's device would see it: *outbound* = sent by the node (the
//! fabric received it), *inbound* = sent to the node. At the end an Interface Statistics Block
//! records how many frames the fabric dropped for a slow reader (`isb_ifdrop`). Classic pcap
//! (`--format pcap`) has no place for direction or drops.
//!
//! Output is flushed after each batch of frames that arrived together, so `-w - | tshark -r -`
//! shows them live; the file is complete (every block whole) however the capture ends: `-c`,
//! `--duration`, Ctrl-C, or the server going away.
//!
//! Must not: hold frames back for long (no unbounded buffering), or panic on a stream it does
//! not expect (an unknown direction writes no flag).

use std::borrow::Cow;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use enifab_proto::v1 as pb;
use futures::FutureExt;
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::blocks::interface_statistics::{InterfaceStatisticsBlock, InterfaceStatisticsOption};

use crate::cli::{SignedChannel, access_key, connect, describe_status};

/// The file formats `--format` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pcapng,
    Pcap,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "pcapng" => Ok(Format::Pcapng),
            "pcap" => Ok(Format::Pcap),
            _ => Err(format!("{s:?}: the format is pcapng or pcap")),
        }
    }
}

/// What `enifab capture` was asked.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub eni: Option<String>,
    pub node: Option<String>,
    /// 0: every tag.
    pub vlan: u16,
    pub outer: bool,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    /// `-` for stdout.
    pub write: PathBuf,
    pub format: Format,
}

/// How a capture went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub frames: u64,
    pub dropped: u64,
}

/// EPB flags, bits 0-1: the direction.
const INBOUND: u32 = 1;
const OUTBOUND: u32 = 2;

/// A capture file being written.
pub enum Sink<W: Write> {
    Pcapng {
        w: PcapNgWriter<W>,
        start_ns: u64,
    },
    /// `PcapWriter` keeps its writer to itself, so it writes into `buf`, which a flush empties
    /// into `out`.
    Pcap {
        w: PcapWriter<Shared>,
        buf: Shared,
        out: W,
    },
}

/// A buffer written through one handle and drained through another.
#[derive(Clone, Default)]
pub struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Sink<W> {
    /// Writes the file's header: one interface named `name`, Ethernet or (outer) raw IPv4.
    pub fn new(out: W, format: Format, outer: bool, name: &str) -> anyhow::Result<Sink<W>> {
        let linktype = if outer { DataLink::RAW } else { DataLink::ETHERNET };
        Ok(match format {
            Format::Pcapng => {
                let mut w = PcapNgWriter::new(out).context("writing the pcapng section header")?;
                let idb = InterfaceDescriptionBlock {
                    linktype,
                    snaplen: 0,
                    options: vec![
                        InterfaceDescriptionOption::IfName(Cow::Owned(name.to_string())),
                        InterfaceDescriptionOption::IfDescription(Cow::Borrowed(if outer {
                            "enifab fabric port, outer view (Geneve in synthetic IPv4/UDP)"
                        } else {
                            "enifab fabric port, frames as on the trunk"
                        })),
                        InterfaceDescriptionOption::IfTsResol(9),
                    ],
                };
                w.write_pcapng_block(idb).context("writing the pcapng interface")?;
                Sink::Pcapng { w, start_ns: now_ns() }
            }
            Format::Pcap => {
                let header = PcapHeader {
                    datalink: linktype,
                    snaplen: 262_144,
                    ts_resolution: pcap_file::TsResolution::NanoSecond,
                    ..PcapHeader::default()
                };
                let buf = Shared::default();
                let w = PcapWriter::with_header(buf.clone(), header).context("writing the pcap header")?;
                Sink::Pcap { w, buf, out }
            }
        })
    }

    pub fn frame(&mut self, f: &pb::CapturedFrame) -> anyhow::Result<()> {
        let timestamp = Duration::from_nanos(f.timestamp_ns);
        let len = u32::try_from(f.data.len()).unwrap_or(u32::MAX);
        match self {
            Sink::Pcapng { w, .. } => {
                let flags = match pb::CaptureDirection::try_from(f.direction) {
                    Ok(pb::CaptureDirection::FromPort) => Some(OUTBOUND),
                    Ok(pb::CaptureDirection::ToPort) => Some(INBOUND),
                    _ => None,
                };
                let epb = EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp,
                    original_len: len,
                    data: Cow::Borrowed(&f.data),
                    options: flags.map(EnhancedPacketOption::Flags).into_iter().collect(),
                };
                w.write_pcapng_block(epb).context("writing a frame")?;
            }
            Sink::Pcap { w, .. } => {
                w.write_packet(&PcapPacket::new(timestamp, len, &f.data)).context("writing a frame")?;
            }
        }
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Pcapng { w, .. } => w.get_mut().flush(),
            Sink::Pcap { buf, out, .. } => {
                let bytes = std::mem::take(&mut *buf.0.lock().unwrap_or_else(|p| p.into_inner()));
                out.write_all(&bytes)?;
                out.flush()
            }
        }
    }

    /// Writes what a pcapng file says at its end (the frames received and dropped) and flushes.
    pub fn finish(mut self, summary: Summary) -> anyhow::Result<W> {
        if let Sink::Pcapng { w, start_ns } = &mut self {
            let isb = InterfaceStatisticsBlock {
                interface_id: 0,
                timestamp: now_ns(),
                options: vec![
                    InterfaceStatisticsOption::IsbStartTime(*start_ns),
                    InterfaceStatisticsOption::IsbEndTime(now_ns()),
                    InterfaceStatisticsOption::IsbIfRecv(summary.frames + summary.dropped),
                    InterfaceStatisticsOption::IsbIfDrop(summary.dropped),
                ],
            };
            w.write_pcapng_block(isb).context("writing the capture's statistics")?;
        }
        self.flush().context("flushing the capture")?;
        Ok(match self {
            Sink::Pcapng { w, .. } => w.into_inner(),
            Sink::Pcap { out, .. } => out,
        })
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Runs a capture against the emulator at `endpoint` until `-c`, `--duration`, Ctrl-C or the end
/// of the stream, writing to `out`; `stop` ends it early when it resolves. `started` is called
/// with the interface's name once the fabric copies the frames.
pub async fn capture<W: Write>(
    endpoint: &str,
    o: &CaptureOptions,
    out: W,
    stop: impl std::future::Future<Output = ()>,
    started: impl FnOnce(&str),
) -> anyhow::Result<(Summary, W)> {
    let channel = connect(endpoint).await?;
    let mut client = pb::fabric_client::FabricClient::new(SignedChannel::new(channel, access_key()));
    let request = pb::CaptureFramesRequest {
        eni_id: o.eni.clone().unwrap_or_default(),
        instance_id: o.node.clone().unwrap_or_default(),
        vlan: u32::from(o.vlan),
        outer: o.outer,
        max_frames: o.count.unwrap_or(0),
    };
    let mut stream =
        client.capture_frames(request).await.map_err(|s| anyhow::anyhow!(describe_status(&s)))?.into_inner();
    let name = match (&o.eni, &o.node) {
        (Some(e), _) => format!("enifab:{e}"),
        (None, Some(n)) => format!("enifab:{n}"),
        (None, None) => "enifab".to_string(),
    };
    let mut sink = Sink::new(out, o.format, o.outer, &name)?;
    flush_or_end(&mut sink)?;
    started(&name);
    let mut summary = Summary::default();
    let deadline = async {
        match o.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline, stop);
    let limit = o.count.unwrap_or(u64::MAX);
    'outer: while summary.frames < limit {
        let first = tokio::select! {
            m = stream.message() => m,
            _ = &mut deadline => break,
            _ = &mut stop => break,
        };
        let mut next = first;
        // This frame and the ones already here: one flush for the batch.
        loop {
            match next {
                Ok(Some(f)) => {
                    summary.dropped = summary.dropped.max(f.dropped);
                    if let Err(e) = sink.frame(&f) {
                        // A reader that went away (`| head`) ends the capture, not an error.
                        if broken_pipe(&e) {
                            break 'outer;
                        }
                        return Err(e);
                    }
                    summary.frames += 1;
                    if summary.frames >= limit {
                        break;
                    }
                }
                Ok(None) => {
                    flush_or_end(&mut sink)?;
                    break 'outer;
                }
                Err(s) => {
                    let _ = sink.finish(summary);
                    anyhow::bail!("the capture stopped: {}", describe_status(&s));
                }
            }
            match stream.message().now_or_never() {
                Some(m) => next = m,
                None => break,
            }
        }
        if !flush_or_end(&mut sink)? {
            break;
        }
    }
    match sink.finish(summary) {
        Ok(w) => Ok((summary, w)),
        Err(e) if broken_pipe(&e) => Err(anyhow::anyhow!("the reader went away after {} frames", summary.frames)),
        Err(e) => Err(e),
    }
}

/// Flushes; false when the reader went away.
fn flush_or_end<W: Write>(sink: &mut Sink<W>) -> anyhow::Result<bool> {
    match sink.flush() {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing the capture"),
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<pcap_file::PcapError>().is_some_and(
                |p| matches!(p, pcap_file::PcapError::IoError(e) if e.kind() == std::io::ErrorKind::BrokenPipe),
            )
    })
}

/// `enifab capture`: to a file or stdout, ended by Ctrl-C too; the tally on stderr.
pub async fn run(endpoint: &str, o: CaptureOptions) -> anyhow::Result<std::process::ExitCode> {
    let out: Box<dyn Write + Send> = if o.write.as_os_str() == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout()))
    } else {
        let f = std::fs::File::create(&o.write).with_context(|| format!("creating {}", o.write.display()))?;
        Box::new(std::io::BufWriter::new(f))
    };
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let link = if o.outer { "RAW (IPv4: Geneve in UDP)" } else { "ETHERNET" };
    let started = |name: &str| eprintln!("capturing on {name}, link-type {link}");
    let (summary, _) = capture(endpoint, &o, out, stop, started).await?;
    eprintln!("{} frames captured, {} dropped", summary.frames, summary.dropped);
    Ok(std::process::ExitCode::SUCCESS)
}
