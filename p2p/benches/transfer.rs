//! Bulk chunk transfer between two processes on loopback: over the bulk
//! endpoint (quinn beside the swarm), over libp2p-stream on the swarm, and
//! a plain TCP copy of the same bytes; and Raft round-trip latency idle
//! and during each transfer.
//!
//! `cargo bench -p filesyncd-p2p --bench transfer`
//!
//! Environment (read by both processes):
//! * `FILESYNCD_BENCH_MIB` (default 1024): data size in MiB, 64 KiB chunks.
//! * `FILESYNCD_BENCH_STREAMS`, `FILESYNCD_BENCH_BATCH`: chunk streams per
//!   peer, hashes per request (both paths).
//! * `FILESYNCD_BENCH_WINDOW_MIB`: libp2p QUIC stream window.
//! * Bulk knobs: `FILESYNCD_BENCH_MTU` (discovery upper bound on the
//!   loopback path),
//!   `FILESYNCD_BENCH_INITIAL_MTU`, `FILESYNCD_BENCH_CC` (cubic, newreno,
//!   bbr), `FILESYNCD_BENCH_CHACHA=1` (ChaCha20 first),
//!   `FILESYNCD_BENCH_SOCKBUF_MIB`, `FILESYNCD_BENCH_BULK_WINDOW_MIB`
//!   (stream window; the connection window is 6 times it, and on loopback
//!   at most 3/4 of the socket receive buffer).
//! * `FILESYNCD_BENCH_SKIP_LIBP2P=1`: measure TCP and bulk only.
//! * `FILESYNCD_BENCH_DATA=words`: compressible chunks (words drawn from a
//!   small vocabulary, zstd level 1 keeps about a third) instead of
//!   pseudo-random bytes (the default, `random`), to see what the
//!   per-link compression choice costs or gains.
//!
//! The bench binary spawns itself with `FILESYNCD_BENCH_ROLE=serve` as the
//! serving process: it regenerates the same pseudo-random chunks from a
//! seed, serves them over the bulk endpoint, over `/filesyncd/chunks/1` and
//! over a plain TCP socket, and answers Raft requests. The measuring
//! process runs two nodes: one with the bulk endpoint off (its fetch goes
//! over libp2p-stream) and one with it on. Each fetches everything (each
//! chunk blake3-verified, as in production) while it probes a 64-byte Raft
//! request every 50 ms; the idle probes come first. At the end the serving
//! process prints on stderr what its compressor did (zstd runs, frames
//! sent compressed or raw, measured zstd speeds and link rates).

use filesyncd_p2p::{
    start, ChunkProvider, Congestion, FetchPlan, Hash, Keypair, Multiaddr, P2pClient, P2pConfig,
    P2pEvent, PeerId, Services,
};
use futures::StreamExt;
use rand::{RngCore, SeedableRng};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHUNK: usize = 64 * 1024;
const SEED: u64 = 0x5eed_f11e;
const PROBE_EVERY: Duration = Duration::from_millis(50);
const IDLE_PROBES: usize = 100;

fn mib() -> usize {
    std::env::var("FILESYNCD_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

fn words_data() -> bool {
    std::env::var("FILESYNCD_BENCH_DATA").as_deref() == Ok("words")
}

/// The chunks, generated in order from the seed; calls `f` on each.
fn for_each_chunk(total_mib: usize, mut f: impl FnMut(Vec<u8>)) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    let words = words_data();
    for _ in 0..total_mib * (1 << 20) / CHUNK {
        let mut c = vec![0u8; CHUNK];
        if words {
            fill_words(&mut rng, &mut c);
        } else {
            rng.fill_bytes(&mut c);
        }
        f(c);
    }
}

/// Fills `buf` with words drawn at random from a 512-word vocabulary.
fn fill_words(rng: &mut rand::rngs::StdRng, buf: &mut [u8]) {
    const SYLLABLES: [&[u8]; 16] = [
        b"ka", b"lo", b"mi", b"nu", b"pe", b"ra", b"si", b"to", b"ve", b"zo", b"an", b"el", b"or",
        b"ut", b"is", b"em",
    ];
    let mut i = 0;
    while i < buf.len() {
        let r = rng.next_u32();
        let mut word = Vec::with_capacity(8);
        for k in 0..(2 + (r & 1)) {
            word.extend_from_slice(SYLLABLES[((r >> (1 + 4 * k)) & 15) as usize]);
        }
        word.push(if r >> 28 == 0 { b'\n' } else { b' ' });
        for &b in &word {
            if i == buf.len() {
                break;
            }
            buf[i] = b;
            i += 1;
        }
    }
}

struct MemProvider(HashMap<Hash, Arc<Vec<u8>>>);

impl ChunkProvider for MemProvider {
    fn get(&self, hash: &Hash) -> Option<Vec<u8>> {
        self.0.get(hash).map(|c| c.as_ref().clone())
    }
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Defaults, unless overridden for exploration by `FILESYNCD_BENCH_STREAMS`
/// (chunk streams per peer), `FILESYNCD_BENCH_BATCH` (hashes per request),
/// `FILESYNCD_BENCH_WINDOW_MIB` (QUIC stream window; the connection window
/// follows the starvation rule).
fn config() -> P2pConfig {
    let mut c = P2pConfig {
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("multiaddr")],
        ..P2pConfig::default()
    };
    if let Some(n) = env_usize("FILESYNCD_BENCH_STREAMS") {
        c.limits.fetch_streams_per_peer = n;
        c.limits.serve_streams_per_peer = n;
    }
    if let Some(n) = env_usize("FILESYNCD_BENCH_BATCH") {
        c.limits.fetch_batch = n;
    }
    if let Some(n) = env_usize("FILESYNCD_BENCH_WINDOW_MIB") {
        c.quic.stream_window = (n << 20) as u32;
    }
    let streams = c.limits.fetch_streams_per_peer as u32;
    c.quic.connection_window = c
        .quic
        .connection_window
        .max(c.quic.stream_window * (streams + 2));
    let b = &mut c.bulk;
    if let Some(n) = env_usize("FILESYNCD_BENCH_MTU") {
        // On loopback, the loopback bound is the one in use.
        b.loopback_mtu_upper_bound = n as u16;
        b.mtu_upper_bound = b.mtu_upper_bound.min(n as u16);
    }
    if let Some(n) = env_usize("FILESYNCD_BENCH_INITIAL_MTU") {
        b.initial_mtu = n as u16;
    }
    if let Some(n) = env_usize("FILESYNCD_BENCH_SOCKBUF_MIB") {
        b.socket_buffer = n << 20;
    }
    if let Some(n) = env_usize("FILESYNCD_BENCH_BULK_WINDOW_MIB") {
        b.stream_window = (n << 20) as u32;
        b.connection_window = ((6 * n) << 20) as u32;
        b.send_window = ((6 * n) << 20) as u64;
    }
    match std::env::var("FILESYNCD_BENCH_CC").as_deref() {
        Ok("bbr") => b.congestion = Congestion::Bbr,
        Ok("newreno") => b.congestion = Congestion::NewReno,
        _ => {}
    }
    b.prefer_chacha = std::env::var("FILESYNCD_BENCH_CHACHA").as_deref() == Ok("1");
    b.max_streams_per_connection = b
        .max_streams_per_connection
        .max(c.limits.fetch_streams_per_peer as u32);
    c
}

fn knobs() -> String {
    let c = config();
    let b = &c.bulk;
    format!(
        "streams/peer {}, batch {}, bulk: loopback mtu <= {}, initial {}, {:?}, {}, socket buffers {} MiB asked, windows {}/{} MiB (loopback connection: at most 3/4 of the receive buffer)",
        c.limits.fetch_streams_per_peer,
        c.limits.fetch_batch,
        b.loopback_mtu_upper_bound,
        b.initial_mtu,
        b.congestion,
        if b.prefer_chacha { "ChaCha20 first" } else { "AES-GCM first" },
        b.socket_buffer >> 20,
        b.stream_window >> 20,
        b.connection_window >> 20,
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var("FILESYNCD_BENCH_ROLE").as_deref() == Ok("serve") {
        rt.block_on(serve());
    } else {
        rt.block_on(measure());
    }
}

async fn answer(mut events: tokio::sync::mpsc::Receiver<P2pEvent>) {
    while let Some(ev) = events.recv().await {
        if let P2pEvent::RaftRequest { bytes, reply, .. } = ev {
            let _ = reply.send(bytes);
        }
    }
}

/// The serving process.
async fn serve() {
    let client_peers: Vec<PeerId> = std::env::var("FILESYNCD_BENCH_CLIENT")
        .expect("FILESYNCD_BENCH_CLIENT")
        .split(',')
        .map(|p| p.parse().expect("peer id"))
        .collect();
    let mut chunks = Vec::new();
    for_each_chunk(mib(), |c| chunks.push(Arc::new(c)));
    let map = chunks
        .iter()
        .map(|c| (Hash::of_chunk(c), c.clone()))
        .collect();
    let (client, events) = start(
        Keypair::generate_ed25519(),
        config(),
        Services {
            chunks: Arc::new(MemProvider(map)),
            join_verifier: None,
        },
    )
    .await
    .expect("start");
    tokio::spawn(answer(events));
    client
        .set_members(
            client_peers
                .iter()
                .copied()
                .chain([client.local_peer_id()])
                .collect(),
        )
        .await
        .expect("members");

    let tcp = TcpListener::bind("127.0.0.1:0").expect("tcp bind");
    let tcp_addr = tcp.local_addr().expect("tcp addr");
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = tcp.accept() {
            for c in &chunks {
                if s.write_all(c).is_err() {
                    return;
                }
            }
        }
    });
    let addr = &client.listen_addrs().await.expect("addrs")[0];
    println!("READY {} {} {}", client.local_peer_id(), addr, tcp_addr);
    std::io::stdout().flush().expect("stdout");
    // Serve until the measuring process closes our stdin.
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await
    .expect("stdin");
    // stdout is closed by now: the serving side's numbers go to stderr.
    let z = client.compression_stats();
    let rate = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{:.0} MB/s", r / 1e6));
    eprintln!(
        "server compression: {} zstd runs ({} probes), {} frames sent zstd ({} from the cache), {} raw; zstd here: compress {}, decompress {}, ratio {}",
        z.compressions,
        z.probes,
        z.frames_zstd,
        z.frames_zstd_cached,
        z.frames_raw,
        rate(z.compress_rate),
        rate(z.decompress_rate),
        z.ratio.map_or("-".to_owned(), |r| format!("{r:.3}")),
    );
    for peer in &client_peers {
        eprintln!(
            "server: link to {peer} measured at {}",
            rate(client.link_rate(peer))
        );
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n={})",
        percentile(&v, 0.50).as_secs_f64() * 1e3,
        percentile(&v, 0.99).as_secs_f64() * 1e3,
        v.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        v.len()
    )
}

/// Raft round trips every 50 ms until `stop` (or `max` samples).
async fn probe(
    client: P2pClient,
    peer: PeerId,
    stop: Arc<AtomicBool>,
    max: usize,
) -> Vec<Duration> {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) && out.len() < max {
        tick.tick().await;
        let t0 = Instant::now();
        client
            .raft_request(peer, vec![1u8; 64])
            .await
            .expect("raft probe");
        out.push(t0.elapsed());
    }
    out
}

/// Starts a measuring node and makes it and the server members.
async fn measuring_node(
    keypair: Keypair,
    bulk: bool,
    server: PeerId,
    server_addr: &Multiaddr,
) -> P2pClient {
    let me = keypair.public().to_peer_id();
    let mut c = config();
    c.bulk.enabled = bulk;
    let (client, events) = start(
        keypair,
        c,
        Services {
            chunks: Arc::new(MemProvider(HashMap::new())),
            join_verifier: None,
        },
    )
    .await
    .expect("start");
    tokio::spawn(answer(events));
    client
        .set_members([me, server].into_iter().collect())
        .await
        .expect("members");
    client
        .add_addresses(server, vec![server_addr.clone()])
        .await
        .expect("addresses");
    client.raft_request(server, vec![0]).await.expect("warm-up");
    client
}

/// Fetches every chunk from `server` while Raft is probed; (seconds, probes).
async fn fetch_all(
    label: &str,
    client: &P2pClient,
    server: PeerId,
    hashes: &[Hash],
) -> (f64, Vec<Duration>) {
    // On stderr, for a profiler attached by phase.
    eprintln!("[bench] {label} fetch starts");
    let stop = Arc::new(AtomicBool::new(false));
    let prober = tokio::spawn(probe(client.clone(), server, stop.clone(), usize::MAX));
    let t0 = Instant::now();
    let mut fetch = client.fetch_chunks(FetchPlan::from_all(&[server], hashes.iter().copied()));
    let mut bytes = 0usize;
    let mut count = 0usize;
    while let Some(item) = fetch.next().await {
        let chunk = item.expect("every chunk fetched");
        bytes += chunk.len();
        count += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("[bench] {label} fetch done");
    stop.store(true, Ordering::Relaxed);
    let probes = prober.await.expect("probe");
    assert_eq!(count, hashes.len());
    assert_eq!(bytes, hashes.len() * CHUNK);
    (secs, probes)
}

/// The measuring process.
async fn measure() {
    let total_mib = mib();
    let skip_libp2p = std::env::var("FILESYNCD_BENCH_SKIP_LIBP2P").as_deref() == Ok("1");
    let plain_key = Keypair::generate_ed25519();
    let bulk_key = Keypair::generate_ed25519();
    let plain_peer = plain_key.public().to_peer_id();
    let bulk_peer = bulk_key.public().to_peer_id();
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .env("FILESYNCD_BENCH_ROLE", "serve")
        .env("FILESYNCD_BENCH_MIB", total_mib.to_string())
        .env(
            "FILESYNCD_BENCH_CLIENT",
            format!("{plain_peer},{bulk_peer}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the serving process");
    let mut hashes = Vec::new();
    for_each_chunk(total_mib, |c| hashes.push(Hash::of_chunk(&c)));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("READY line");
    let parts: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        parts.first(),
        Some(&"READY"),
        "serving process said {line:?}"
    );
    let server: PeerId = parts[1].parse().expect("server peer id");
    let server_addr: Multiaddr = parts[2].parse().expect("server multiaddr");
    let tcp_addr = parts[3].to_owned();

    let plain = measuring_node(plain_key, false, server, &server_addr).await;
    let bulk = measuring_node(bulk_key, true, server, &server_addr).await;
    // The bulk connection comes up in the background after identify.
    let t0 = Instant::now();
    while !bulk.bulk_peers().await.contains(&server) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no bulk connection to the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let idle = probe(
        bulk.clone(),
        server,
        Arc::new(AtomicBool::new(false)),
        IDLE_PROBES,
    )
    .await;

    // Plain TCP copy of the same bytes.
    let tcp_secs = tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(tcp_addr).expect("tcp connect");
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0usize;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => panic!("tcp read: {e}"),
            }
        }
        assert_eq!(n, total_mib << 20);
        t0.elapsed().as_secs_f64()
    })
    .await
    .expect("tcp copy");

    let libp2p = if skip_libp2p {
        None
    } else {
        Some(fetch_all("libp2p", &plain, server, &hashes).await)
    };
    let (bulk_secs, bulk_probes) = fetch_all("bulk", &bulk, server, &hashes).await;
    let stats = bulk.bulk_stats();
    let conns = bulk.bulk_connections().await;
    assert_eq!(
        stats.chunks_bulk,
        hashes.len() as u64,
        "every chunk over the bulk path: {stats:?}"
    );

    let tcp_rate = total_mib as f64 / tcp_secs;
    let bulk_rate = total_mib as f64 / bulk_secs;
    println!(
        "transfer: {total_mib} MiB as {} chunks of 64 KiB ({} data), two processes on loopback",
        hashes.len(),
        if words_data() {
            "compressible words"
        } else {
            "pseudo-random"
        }
    );
    println!("  knobs: {}", knobs());
    println!("  plain TCP copy                 {tcp_rate:9.1} MiB/s  ({tcp_secs:.2} s)");
    if let Some((secs, _)) = &libp2p {
        let rate = total_mib as f64 / secs;
        println!(
            "  libp2p-stream (swarm QUIC)     {rate:9.1} MiB/s  ({secs:.2} s)  ratio {:.3}",
            rate / tcp_rate
        );
    }
    println!(
        "  bulk endpoint (quinn, verified) {bulk_rate:8.1} MiB/s  ({bulk_secs:.2} s)  ratio {:.3}",
        bulk_rate / tcp_rate
    );
    for c in &conns {
        println!(
            "  bulk path: mtu {} B, rtt {:?}, cwnd {} KiB, lost {} of {} packets, {} congestion events",
            c.mtu,
            c.rtt,
            c.cwnd >> 10,
            c.lost_packets,
            c.sent_packets,
            c.congestion_events
        );
    }
    println!(
        "  bulk socket buffers granted (as the kernel reports): rcv {} KiB, snd {} KiB",
        stats.recv_buffer >> 10,
        stats.send_buffer >> 10
    );
    println!("raft round trip (64 B, every 50 ms, on the swarm's connection):");
    println!("  idle                    {}", summary(idle));
    if let Some((_, probes)) = libp2p {
        println!("  during libp2p transfer  {}", summary(probes));
    }
    println!("  during bulk transfer    {}", summary(bulk_probes));

    plain.shutdown().await;
    bulk.shutdown().await;
    drop(child.stdin.take());
    let _ = child.wait();
}
