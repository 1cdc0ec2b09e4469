//! The worker fleet end to end against a real `nats-server -js` (Debian's, installed by
//! scripts/setup.sh) on a loopback port with its own store: 30 jobs with bad inputs among them,
//! three workers of which one is SIGKILLed and one SIGTERMed in the middle of a job, the server
//! restarted during the run; at the end exactly one result per job, equal to what `vidlm batch`
//! writes for the same manifest. Also: resubmits add nothing, a wrong model takes no job, and
//! `vidlm batch --shard` covers a manifest exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{records, root, synthetic, vidlm, write_manifest};

fn model() -> String {
    common::fixture_model("smolvlm-tiny-sf2")
}

/// The flags every run here uses: the tiny model, 4 new tokens, so a job takes well under a second
/// (the 55 s trailer a few seconds: those are the jobs workers get killed in).
fn pipeline_args() -> Vec<String> {
    vec![
        "--model".into(),
        model(),
        "--max-new-tokens".into(),
        "4".into(),
    ]
}

/// A child process killed when dropped, so a failed assertion leaves nothing running.
struct Proc(Child);

impl Proc {
    fn pid(&self) -> String {
        self.0.id().to_string()
    }

    /// Waits at most `limit` for the exit (then kills it and fails).
    fn wait(&mut self, limit: Duration, what: &str) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                return st;
            }
            if t0.elapsed() > limit {
                let _ = self.0.kill();
                panic!("{what} did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `nats-server -js` on a free loopback port, storing under a temp dir; stopped when dropped.
struct NatsServer {
    proc: Option<Proc>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl NatsServer {
    /// Starts one, or returns None (printing why) where nats-server is not installed outside CI.
    fn start(dir: &Path) -> Option<Self> {
        Self::start_with(dir, &[])
    }

    /// [`Self::start`] with more server flags (TLS, auth).
    fn start_with(dir: &Path, args: &[&str]) -> Option<Self> {
        if Command::new("nats-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "nats-server is missing: scripts/setup.sh installs it"
            );
            eprintln!("skipping: nats-server is not installed (scripts/setup.sh installs it)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = Self {
            proc: None,
            port,
            dir: dir.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        s.spawn();
        Some(s)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("nats.log"))
            .unwrap();
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.join("store"))
            .args(&self.args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.proc = Some(Proc(child));
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "nats-server did not start: {}",
                std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (SIGTERM) and starts it again on the same port and store.
    fn restart(&mut self) {
        if let Some(mut p) = self.proc.take() {
            signal(&p, "TERM");
            p.wait(Duration::from_secs(20), "nats-server");
        }
        self.spawn();
    }
}

fn signal(p: &Proc, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &p.pid()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} failed");
}

/// Runs `cmd` to its end (at most `limit`): status, stdout, stderr.
fn run(cmd: &mut Command, dir: &Path, limit: Duration) -> (ExitStatus, String, String) {
    let (out, err) = (dir.join("run.stdout"), dir.join("run.stderr"));
    let mut p = Proc(
        cmd.stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap(),
    );
    let st = p.wait(limit, &format!("{cmd:?}"));
    (
        st,
        std::fs::read_to_string(out).unwrap(),
        std::fs::read_to_string(err).unwrap(),
    )
}

fn fleet(sub: &str, url: &str) -> Command {
    let mut c = vidlm();
    c.args([sub, "--queue", url]).env_remove("RUST_LOG");
    c
}

/// A `vidlm worker --drain` with its log (info level) going to `log`.
fn worker(url: &str, log: &Path, extra: &[&str]) -> Proc {
    let mut c = fleet("worker", url);
    c.args(pipeline_args())
        .args(["--drain", "--log", "info"])
        .args(extra)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap());
    Proc(c.spawn().unwrap())
}

/// Waits (at most 120 s) for a line of `log` containing `needle`, and returns it.
fn wait_for_line(log: &Path, needle: &str, p: &mut Proc) -> String {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        if let Some(st) = p.0.try_wait().unwrap() {
            panic!("worker exited ({st}) before `{needle}`:\n{text}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no `{needle}` in {}:\n{text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The job id of a worker's `ID: started (delivery N)` log line.
fn started_id(line: &str) -> String {
    let before = line.split(": started (delivery").next().unwrap();
    before.rsplit(' ').next().unwrap().to_string()
}

fn status(url: &str, dir: &Path) -> Value {
    let (st, out, err) = run(
        fleet("status", url).arg("--json"),
        dir,
        Duration::from_secs(30),
    );
    assert!(st.success(), "{err}");
    serde_json::from_str(out.trim()).unwrap()
}

fn submit(url: &str, manifest: &Path, dir: &Path) -> String {
    submit_to(
        url,
        manifest,
        dir,
        &["--ack-wait", "5s", "--max-tries", "3"],
    )
}

fn submit_to(url: &str, manifest: &Path, dir: &Path, flags: &[&str]) -> String {
    let (st, out, err) = run(
        fleet("submit", url).arg(manifest).args(flags),
        dir,
        Duration::from_secs(60),
    );
    assert!(st.success(), "{err}");
    out
}

/// `vidlm results` of `stream`: the records it wrote.
fn collect(url: &str, stream: &str, dir: &Path) -> Vec<Value> {
    let out = dir.join(format!("{stream}.results.jsonl"));
    let (st, _, err) = run(
        fleet("results", url)
            .args(["--stream", stream, "--out"])
            .arg(&out),
        dir,
        Duration::from_secs(60),
    );
    assert!(st.success(), "{err}");
    records(&out)
}

/// Records by id, without the fields that vary from run to run (stage seconds).
fn deterministic(recs: &[Value]) -> BTreeMap<String, Value> {
    recs.iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("timings");
            (r["id"].as_str().unwrap().to_string(), r)
        })
        .collect()
}

/// 30 jobs: 4 over the 55 s trailer (the first three are what the workers start with, long
/// enough to be killed in), 23 over short sample clips (summaries, questions, ranges), and 3 bad
/// inputs (a missing file, an audio-only file, a file that is no video).
fn manifest(dir: &Path) -> (PathBuf, BTreeSet<String>) {
    let trailer = root().join("samples/bbb-trailer-720p-55s.mp4");
    let garbage = dir.join("garbage.mp4");
    std::fs::write(&garbage, "this is not a video\n".repeat(100)).unwrap();
    let clips = [
        synthetic("square.mp4"),
        synthetic("vfr.mp4"),
        synthetic("longgop.mp4"),
        synthetic("rotated.mp4"),
        synthetic("anamorphic.mp4"),
        synthetic("yuv420p10.mp4"),
        synthetic("square.ts"),
        synthetic("pal8.mkv"),
        root().join("samples/bbb-720p-5s.mp4"),
        synthetic("yuv444p.mp4"),
    ];
    let mut items: Vec<Value> = (0..3)
        .map(|i| json!({"id": format!("long{i}"), "input": trailer}))
        .collect();
    for k in 0..23 {
        let clip = &clips[k % clips.len()];
        items.push(match k % 3 {
            0 => json!({"id": format!("clip{k}"), "input": clip}),
            1 => json!({"id": format!("clip{k}"), "input": clip, "question": "What is shown?"}),
            // Ranges over the clips at least 5 s long.
            _ => json!({"id": format!("clip{k}"), "input": clips[[0, 2, 6, 8][k % 4]], "task": "summarize", "from": 1, "to": "0:03"}),
        });
        if k == 8 {
            items.push(json!({"id": "bad-missing", "input": dir.join("missing.mp4")}));
            items.push(json!({"id": "long3", "input": trailer, "question": "Who is there?"}));
        }
        if k == 15 {
            items.push(json!({"id": "bad-audio", "input": synthetic("audio-only.m4a")}));
            items.push(json!({"id": "bad-garbage", "input": garbage}));
        }
    }
    assert_eq!(items.len(), 30);
    let path = dir.join("jobs.jsonl");
    write_manifest(&path, &items);
    let ids = items
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    (path, ids)
}

#[test]
fn fleet_survives_killed_workers_and_a_server_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let Some(mut server) = NatsServer::start(d) else {
        return;
    };
    let url = server.url();
    let (jobs, ids) = manifest(d);

    let first = submit(&url, &jobs, d);
    assert!(
        first.starts_with("30 new, 0 already queued, 0 already done"),
        "{first}"
    );
    // Resubmitting: JetStream drops every message id it has (same id and settings).
    let again = submit(&url, &jobs, d);
    assert!(
        again.starts_with("0 new, 30 already queued, 0 already done"),
        "{again}"
    );

    // A worker with a wrong model directory fails at start, clearly, and takes no job.
    let not_a_model = d.join("not-a-model");
    std::fs::create_dir(&not_a_model).unwrap();
    let (st, _, err) = run(
        fleet("worker", &url)
            .arg("--model")
            .arg(&not_a_model)
            .arg("--drain"),
        d,
        Duration::from_secs(60),
    );
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        err.starts_with("vidlm: error: model ")
            && err.contains("not-a-model")
            && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(
        status(&url, d),
        json!({"pending": 30, "in_progress": 0, "done": 0, "failed": 0})
    );

    let logs: Vec<PathBuf> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| d.join(format!("worker-{n}.log")))
        .collect();
    // One job at a time, so each of the three starts with one of the long jobs.
    let one = ["--concurrency", "1"];
    let mut a = worker(&url, &logs[0], &one);
    let mut b = worker(&url, &logs[1], &[&one[..], &["--grace", "0.1s"]].concat());
    // C and D store records over 600 bytes (most ok records) in the object store.
    let mut c = worker(
        &url,
        &logs[2],
        &[&one[..], &["--inline-max", "600"]].concat(),
    );

    // SIGKILL in the middle of a job: A dies holding its job unacked.
    let killed = started_id(&wait_for_line(&logs[0], ": started (delivery 1)", &mut a));
    a.0.kill().unwrap();
    a.wait(Duration::from_secs(10), "worker A");
    // SIGTERM in the middle of a job, with a short grace: B hands its job back and exits.
    let termed = started_id(&wait_for_line(&logs[1], ": started (delivery 1)", &mut b));
    signal(&b, "TERM");
    let st = b.wait(Duration::from_secs(60), "worker B");
    let b_log = std::fs::read_to_string(&logs[1]).unwrap();
    assert_eq!(st.code(), Some(130), "{b_log}");
    assert!(
        b_log.contains(&format!("{termed}: handed back unfinished")),
        "{b_log}"
    );

    // Restart the server while jobs are still left.
    let t0 = Instant::now();
    loop {
        let s = status(&url, d);
        let finished = s["done"].as_u64().unwrap() + s["failed"].as_u64().unwrap();
        if finished >= 6 {
            assert!(
                s["pending"].as_u64().unwrap() + s["in_progress"].as_u64().unwrap() > 0,
                "the run ended before the restart: {s}"
            );
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(240), "stuck at {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.restart();
    // A worker joining after the restart.
    let mut late = worker(&url, &logs[3], &["--inline-max", "600"]);

    for (p, name) in [(&mut c, "worker C"), (&mut late, "worker D")] {
        let st = p.wait(Duration::from_secs(300), name);
        assert!(st.success(), "{name}: {st}");
    }
    let all_logs: String = logs
        .iter()
        .map(|l| std::fs::read_to_string(l).unwrap())
        .collect();
    assert!(
        all_logs.contains("result in the object store"),
        "{all_logs}"
    );
    // Both interrupted jobs came back to another worker.
    for id in [&killed, &termed] {
        assert!(
            all_logs.contains(&format!("{id}: started (delivery 2)")),
            "{id} was not redelivered:\n{all_logs}"
        );
    }

    // Exactly one result per job id, the bad inputs as error records.
    let fleet_recs = collect(&url, "vidlm", d);
    assert_eq!(fleet_recs.len(), 30);
    let got: BTreeSet<String> = fleet_recs
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ids);
    for r in &fleet_recs {
        let bad = r["id"].as_str().unwrap().starts_with("bad-");
        assert_eq!(r["status"], if bad { "error" } else { "ok" }, "{r}");
    }
    assert_eq!(
        status(&url, d),
        json!({"pending": 0, "in_progress": 0, "done": 27, "failed": 3})
    );
    // Resubmitting after the run adds nothing: every job has its result.
    let after = submit(&url, &jobs, d);
    assert!(
        after.starts_with("0 new, 0 already queued, 30 already done"),
        "{after}"
    );

    // The same records as `vidlm batch` on the same manifest.
    let batch_out = d.join("batch.jsonl");
    let (st, _, err) = run(
        vidlm()
            .arg("batch")
            .arg(&jobs)
            .arg("--out")
            .arg(&batch_out)
            .args(pipeline_args()),
        d,
        Duration::from_secs(600),
    );
    assert_eq!(st.code(), Some(1), "{err}");
    let want = deterministic(&records(&batch_out));
    let have = deterministic(&fleet_recs);
    assert_eq!(want.len(), 30);
    for (id, w) in &want {
        assert_eq!(&have[id], w, "{id}");
    }
}

#[test]
fn batch_shards_cover_the_manifest_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let clip = synthetic("square.mp4");
    let items: Vec<Value> = (0..7)
        .map(|i| json!({"id": format!("s{i}"), "input": clip, "task": "summarize", "to": 1}))
        .collect();
    let jobs = d.join("jobs.jsonl");
    std::fs::write(
        &jobs,
        items.iter().map(|v| format!("{v}\n")).collect::<String>(),
    )
    .unwrap();
    let out = d.join("out.jsonl");
    let shard = |spec: &str, index: Option<&str>, resume: bool| {
        let mut c = vidlm();
        c.arg("batch")
            .arg(&jobs)
            .arg("--out")
            .arg(&out)
            .args(["--shard", spec])
            .args(pipeline_args())
            .env_remove("JOB_COMPLETION_INDEX");
        if let Some(i) = index {
            c.env("JOB_COMPLETION_INDEX", i);
        }
        if resume {
            c.arg("--resume");
        }
        run(&mut c, d, Duration::from_secs(120))
    };
    // 0/3 and 2/3 given whole, 1/3 the way a Kubernetes Indexed Job gives it.
    for (spec, index) in [("0/3", None), ("3", Some("1")), ("2/3", None)] {
        let (st, _, err) = shard(spec, index, false);
        assert!(st.success(), "{spec}: {err}");
    }
    let mut seen = Vec::new();
    for i in 0..3 {
        let part = records(&d.join(format!("out.shard-{i}-of-3.jsonl")));
        assert!(!part.is_empty() && part.len() <= 3, "shard {i}: {part:?}");
        seen.extend(part.iter().map(|r| r["id"].as_str().unwrap().to_string()));
    }
    seen.sort();
    let want: Vec<String> = (0..7).map(|i| format!("s{i}")).collect();
    assert_eq!(seen, want);
    assert!(!out.exists());
    // --resume per shard: shard 1 is complete, so nothing runs.
    let (st, _, err) = shard("1/3", None, true);
    assert!(st.success() && err.contains("nothing to do"), "{err}");
    // Bad specs fail clearly.
    for (spec, index, needle) in [
        ("3/3", None, "below the count"),
        ("3", None, "JOB_COMPLETION_INDEX"),
        ("a/3", None, "not a number"),
    ] {
        let (st, _, err) = shard(spec, index, false);
        assert_eq!(st.code(), Some(1), "{spec}: {err}");
        assert!(err.contains(needle), "{spec}: {err}");
    }
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn tls_ca_and_passwords_reach_the_client_and_are_never_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // A CA, and a server certificate for 127.0.0.1 that it signs.
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=vidlm test CA",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    let (cert, key) = (d.join("server.pem"), d.join("server.key"));
    let Some(server) = NatsServer::start_with(
        d,
        &[
            "--tls",
            "--tlscert",
            cert.to_str().unwrap(),
            "--tlskey",
            key.to_str().unwrap(),
            "--user",
            "vidlm",
            "--pass",
            "s3cret-pw",
        ],
    ) else {
        return;
    };
    let jobs = d.join("jobs.jsonl");
    write_manifest(&jobs, &[json!({"id": "a", "input": "a.mp4"})]);
    let url = format!("nats://vidlm:s3cret-pw@127.0.0.1:{}", server.port);
    let submit = |url: &str, ca: Option<&Path>| {
        let mut c = fleet("submit", url);
        c.arg(&jobs);
        if let Some(ca) = ca {
            c.arg("--tls-ca").arg(ca);
        }
        run(&mut c, d, Duration::from_secs(60))
    };
    let ca = d.join("ca.pem");
    let (st, out, err) = submit(&url, Some(&ca));
    assert!(st.success(), "{err}");
    assert!(out.starts_with("1 new"), "{out}");
    // Without the CA the server's certificate is not trusted; with a wrong password the server
    // refuses. Either way: a clear error, and no password in it.
    let wrong_pw = url.replace("s3cret-pw", "wr0ng-pw");
    for (u, ca, why) in [
        (&url, None, "without the CA"),
        (&wrong_pw, Some(ca.as_path()), "wrong password"),
    ] {
        let (st, out, err) = submit(u, ca);
        assert_eq!(st.code(), Some(1), "{why}: {out}{err}");
        assert!(
            err.contains("cannot connect to nats://***@127.0.0.1"),
            "{why}: {err}"
        );
        assert!(
            !err.contains("s3cret") && !err.contains("wr0ng"),
            "{why}: {err}"
        );
    }
    // A creds file that cannot be read is named, before any connection.
    let (st, _, err) = run(
        fleet("status", &url)
            .arg("--creds")
            .arg(d.join("missing.creds")),
        d,
        Duration::from_secs(60),
    );
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        err.contains("--creds ") && err.contains("missing.creds"),
        "{err}"
    );
    let (st, out, err) = run(
        fleet("status", &url)
            .arg("--tls-ca")
            .arg(&ca)
            .args(["--log", "trace"]),
        d,
        Duration::from_secs(60),
    );
    assert!(st.success(), "{err}");
    assert_eq!(out.trim(), "pending 1, in progress 0, done 0, failed 0");
    assert!(!err.contains("s3cret"), "{err}");
}

#[test]
fn in_progress_acks_keep_a_long_job_and_a_job_killing_its_workers_is_a_dead_letter() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let Some(server) = NatsServer::start(d) else {
        return;
    };
    let url = server.url();
    let trailer = root().join("samples/bbb-trailer-720p-55s.mp4");
    // fps:4 on the 55 s trailer: a job several times the 1 s ack wait.
    let slow_args = ["--sample", "fps:4"];

    // A job longer than the ack wait is not redelivered while its worker lives.
    let jobs = d.join("slow.jsonl");
    write_manifest(&jobs, &[json!({"id": "slow", "input": trailer})]);
    let flags = ["--stream", "slow", "--ack-wait", "1s"];
    assert!(submit_to(&url, &jobs, d, &flags).starts_with("1 new"));
    let log = d.join("slow.log");
    let mut w = worker(
        &url,
        &log,
        &[&["--stream", "slow"][..], &slow_args].concat(),
    );
    assert!(w.wait(Duration::from_secs(300), "worker").success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches(": started (delivery").count(), 1, "{text}");
    let recs = collect(&url, "slow", d);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["status"], "ok");
    let took = recs[0]["timings"]["total"].as_f64().unwrap();
    assert!(
        took > 2.0,
        "the job took {took} s: too short to outlast the ack wait"
    );

    // --max-tries 1: the worker that takes the job is killed, and the next delivery is recorded
    // as a dead letter instead of being run again.
    let jobs = d.join("doomed.jsonl");
    write_manifest(&jobs, &[json!({"id": "doomed", "input": trailer})]);
    let flags = ["--stream", "dl", "--ack-wait", "1s", "--max-tries", "1"];
    assert!(submit_to(&url, &jobs, d, &flags).starts_with("1 new"));
    let log = d.join("a.log");
    let mut a = worker(&url, &log, &[&["--stream", "dl"][..], &slow_args].concat());
    wait_for_line(&log, "doomed: started (delivery 1)", &mut a);
    a.0.kill().unwrap();
    a.wait(Duration::from_secs(10), "worker A");
    let log = d.join("b.log");
    let mut b = worker(&url, &log, &["--stream", "dl"]);
    assert!(b.wait(Duration::from_secs(120), "worker B").success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("doomed: dead letter after 1 unfinished tries"),
        "{text}"
    );
    assert!(!text.contains("started"), "{text}");
    let recs = collect(&url, "dl", d);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(
        (&r["status"], &r["dead_letter"]),
        (&json!("error"), &json!(true)),
        "{r}"
    );
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("given up after 1 unfinished tries"),
        "{r}"
    );
    let (st, out, _) = run(
        fleet("status", &url).args(["--stream", "dl"]),
        d,
        Duration::from_secs(30),
    );
    assert!(st.success());
    assert_eq!(out.trim(), "pending 0, in progress 0, done 0, failed 1");
}
