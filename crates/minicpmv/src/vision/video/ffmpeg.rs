//! Videos in any container and codec ffmpeg reads (MP4/MOV with H.264 or HEVC from a phone,
//! WebM, MKV, AVI, ...), through the `ffprobe` and `ffmpeg` programs run as subprocesses, as
//! llama.cpp's own video path does. Nothing is linked: a machine without ffmpeg still reads
//! animations and frame folders, and gets an error naming the missing program for the rest.
//!
//! - [`FfmpegVideo::open`] asks `ffprobe` for the first video stream's size, rotation, rate
//!   and frame count (one short run, with a time limit).
//! - [`FfmpegVideo::frames`] runs one `ffmpeg` that decodes the stream once and writes only the
//!   sampled frames, as raw RGB, to a pipe; each frame is read, handed on and dropped. The
//!   child is killed and reaped when the reader is dropped, so an early stop (an error, a
//!   cancelled run) leaves no process behind.
//!
//! `MINICPMV_FFMPEG` and `MINICPMV_FFPROBE` name other programs than the ones on `PATH`.

use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{VideoError, VideoInfo, MAX_SOURCE_FRAMES};
use crate::vision::LoadedImage;

/// How long `ffprobe` may take to read a header before it is killed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// The last bytes of a program's standard error kept for the error message.
const STDERR_TAIL: usize = 2048;

/// The program run for `name` (`ffmpeg` or `ffprobe`): `MINICPMV_FFMPEG` /
/// `MINICPMV_FFPROBE` when set, else the name, looked up on `PATH`.
fn program(name: &'static str) -> PathBuf {
    let var = match name {
        "ffprobe" => "MINICPMV_FFPROBE",
        _ => "MINICPMV_FFMPEG",
    };
    std::env::var_os(var).map_or_else(|| PathBuf::from(name), PathBuf::from)
}

/// `path` as an ffmpeg input: through the `file:` protocol, so that a name with a colon is not
/// taken for a protocol.
fn input(path: &Path) -> std::ffi::OsString {
    let mut a = std::ffi::OsString::from("file:");
    a.push(path.as_os_str());
    a
}

/// Container formats read (ffprobe's `format_name`, which lists aliases with commas): video
/// files, never playlists (`hls`, `concat`) or image sequences, whose demuxers open other files.
const CONTAINERS: &[&str] = &[
    "mov",
    "mp4",
    "m4a",
    "3gp",
    "3g2",
    "mj2",
    "matroska",
    "webm",
    "avi",
    "mpegts",
    "mpeg",
    "flv",
    "ogg",
    "asf",
    "mxf",
    "nut",
    "h264",
    "hevc",
    "m4v",
    "mpegvideo",
    "ivf",
    "dv",
    "wtv",
    "rm",
];

/// Starts `cmd`, its failure to start said in words (a missing program above all).
fn spawn(mut cmd: Command, name: &'static str, path: &Path) -> Result<Child, VideoError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            VideoError::NoFfmpeg {
                program: name,
                path: path.to_path_buf(),
            }
        } else {
            VideoError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Reads a child's standard error on a thread, keeping the last [`STDERR_TAIL`] bytes, so
/// that the child never blocks on a full pipe.
fn drain_stderr(child: &mut Child) -> (Arc<Mutex<Vec<u8>>>, Option<std::thread::JoinHandle<()>>) {
    let tail = Arc::new(Mutex::new(Vec::new()));
    let handle = child.stderr.take().and_then(|mut err| {
        let keep = Arc::clone(&tail);
        std::thread::Builder::new()
            .name("ffmpeg-stderr".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = err.read(&mut buf) {
                    let mut t = keep.lock().unwrap_or_else(|p| p.into_inner());
                    t.extend_from_slice(&buf[..n]);
                    let excess = t.len().saturating_sub(STDERR_TAIL);
                    t.drain(..excess);
                }
            })
            .ok()
    });
    (tail, handle)
}

fn tail_text(tail: &Mutex<Vec<u8>>) -> String {
    let t = tail.lock().unwrap_or_else(|p| p.into_inner());
    let text = String::from_utf8_lossy(&t);
    let text = text.trim();
    if text.is_empty() {
        "no message".to_string()
    } else {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(3)..].join(" / ")
    }
}

/// How a program ended, in words: `ended with exit code 1`, `was killed by signal 9`.
fn status_text(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(sig) = status.signal() {
            return format!("was killed by signal {sig}");
        }
    }
    match status.code() {
        Some(c) => format!("ended with exit code {c}"),
        None => "ended with an unknown status".to_string(),
    }
}

/// A video file that ffmpeg reads: the first video stream's facts, from `ffprobe`.
#[derive(Debug, Clone)]
pub struct FfmpegVideo {
    path: PathBuf,
    info: VideoInfo,
    width: u32,
    height: u32,
    /// The frame count is the container's (`nb_frames`), not estimated from the duration.
    exact_count: bool,
}

/// The parts of `ffprobe -of json` read here.
#[derive(Debug, serde::Deserialize)]
struct Probe {
    #[serde(default)]
    streams: Vec<ProbeStream>,
    format: Option<ProbeFormat>,
}

#[derive(Debug, serde::Deserialize)]
struct ProbeStream {
    width: Option<u32>,
    height: Option<u32>,
    avg_frame_rate: Option<String>,
    r_frame_rate: Option<String>,
    nb_frames: Option<String>,
    duration: Option<String>,
    #[serde(default)]
    side_data_list: Vec<serde_json::Value>,
    #[serde(default)]
    tags: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, serde::Deserialize)]
struct ProbeFormat {
    duration: Option<String>,
    format_name: Option<String>,
}

/// `30000/1001` or `25` as a number; `0/0` and junk as `None`.
fn rate(s: &str) -> Option<f64> {
    let v = match s.split_once('/') {
        Some((n, d)) => n.trim().parse::<f64>().ok()? / d.trim().parse::<f64>().ok()?,
        None => s.trim().parse().ok()?,
    };
    (v.is_finite() && v > 0.0).then_some(v)
}

impl ProbeStream {
    /// Degrees the player turns the picture (`side_data_list[].rotation`, or the older
    /// `rotate` tag).
    fn rotation(&self) -> i64 {
        self.side_data_list
            .iter()
            .find_map(|d| d.get("rotation").and_then(serde_json::Value::as_f64))
            .or_else(|| {
                self.tags
                    .get("rotate")
                    .and_then(|v| v.as_str())
                    .and_then(|s| s.parse().ok())
            })
            .map_or(0, |r: f64| r.round() as i64)
    }
}

impl FfmpegVideo {
    /// Probes `path`: its first video stream's size (as displayed, after rotation), rate and
    /// frame count. The size is checked against `max_pixels` and llama.cpp's side limit.
    pub fn open(path: &Path, max_pixels: u64) -> Result<FfmpegVideo, VideoError> {
        let mut cmd = Command::new(program("ffprobe"));
        // `V`: video streams that are not cover art or thumbnails.
        cmd.args([
            "-v",
            "error",
            "-protocol_whitelist",
            "file",
            "-select_streams",
            "V:0",
        ])
        .arg("-show_entries")
        .arg(
            "stream=width,height,avg_frame_rate,r_frame_rate,nb_frames,duration:\
                 stream_side_data=rotation:stream_tags=rotate:format=duration,format_name",
        )
        .args(["-of", "json"])
        .arg(input(path));
        let mut child = spawn(cmd, "ffprobe", path)?;
        let (tail, errs) = drain_stderr(&mut child);
        let mut out = Vec::new();
        let status = read_with_deadline(&mut child, &mut out, PROBE_TIMEOUT);
        if let Some(h) = errs {
            let _ = h.join();
        }
        let status = status.map_err(|source| VideoError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let Some(status) = status else {
            return Err(VideoError::Probe {
                path: path.to_path_buf(),
                reason: format!(
                    "ffprobe did not finish within {} s",
                    PROBE_TIMEOUT.as_secs()
                ),
            });
        };
        if !status.success() {
            return Err(VideoError::Probe {
                path: path.to_path_buf(),
                reason: format!("ffprobe {}: {}", status_text(status), tail_text(&tail)),
            });
        }
        let probe: Probe = serde_json::from_slice(&out).map_err(|e| VideoError::Probe {
            path: path.to_path_buf(),
            reason: format!("ffprobe's output is not the JSON expected: {e}"),
        })?;
        Self::from_probe(path, probe, max_pixels)
    }

    fn from_probe(path: &Path, probe: Probe, max_pixels: u64) -> Result<FfmpegVideo, VideoError> {
        let p = || path.to_path_buf();
        if let Some(name) = probe.format.as_ref().and_then(|f| f.format_name.as_deref()) {
            if !name.split(',').any(|n| CONTAINERS.contains(&n)) {
                return Err(VideoError::Probe {
                    path: p(),
                    reason: format!("it is a {name} file, not a video container this tool reads"),
                });
            }
        }
        let Some(s) = probe.streams.into_iter().next() else {
            return Err(VideoError::NoFrames { path: p() });
        };
        let (w, h) = (s.width.unwrap_or(0), s.height.unwrap_or(0));
        let (width, height) = if s.rotation().rem_euclid(180) == 90 {
            (h, w)
        } else {
            (w, h)
        };
        super::source::check_frame_size(path, width, height, max_pixels)?;
        let fps = s
            .avg_frame_rate
            .as_deref()
            .and_then(rate)
            .or_else(|| s.r_frame_rate.as_deref().and_then(rate))
            .ok_or_else(|| VideoError::Probe {
                path: p(),
                reason: "the video stream has no frame rate".into(),
            })?;
        let duration = s
            .duration
            .as_deref()
            .or(probe.format.as_ref().and_then(|f| f.duration.as_deref()))
            .and_then(|d| d.trim().parse::<f64>().ok())
            .filter(|d| d.is_finite() && *d >= 0.0);
        let counted = s
            .nb_frames
            .as_deref()
            .and_then(|n| n.trim().parse::<u64>().ok());
        let (n_frames, exact_count) = match (counted, duration) {
            (Some(n), _) => (n, true),
            (None, Some(d)) => ((d * fps).floor() as u64, false),
            (None, None) => {
                return Err(VideoError::Probe {
                    path: p(),
                    reason: "the video stream states neither its frame count nor its duration"
                        .into(),
                })
            }
        };
        if n_frames == 0 {
            return Err(VideoError::NoFrames { path: p() });
        }
        if n_frames > MAX_SOURCE_FRAMES as u64 {
            return Err(VideoError::TooManyFrames { path: p() });
        }
        Ok(FfmpegVideo {
            path: p(),
            info: VideoInfo {
                n_frames: n_frames as usize,
                fps,
            },
            width,
            height,
            exact_count,
        })
    }

    /// Frame count and rate.
    pub fn info(&self) -> VideoInfo {
        self.info
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Width and height of every frame, as displayed.
    pub fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The frames at `indices` (ascending), from one `ffmpeg` run that decodes the stream once
    /// and outputs only those frames.
    pub fn frames(&self, indices: &[usize]) -> Result<FfmpegFrames, VideoError> {
        let mut unique: Vec<usize> = indices.to_vec();
        unique.dedup();
        // select keeps the frames whose number is listed; `scale` to the probed size is a
        // no-op unless the stream's size disagrees with its header, and keeps every frame
        // exactly the size read below.
        let select: Vec<String> = unique.iter().map(|i| format!("eq(n\\,{i})")).collect();
        let filter = format!(
            "select='{}',scale={}:{}",
            select.join("+"),
            self.width,
            self.height
        );
        let mut cmd = Command::new(program("ffmpeg"));
        cmd.args(["-nostdin", "-hide_banner", "-v", "error"])
            .args(["-protocol_whitelist", "file", "-i"])
            .arg(input(&self.path))
            .args(["-map", "0:V:0", "-an", "-sn", "-dn", "-vf"])
            .arg(filter)
            .args([
                "-fps_mode",
                "passthrough",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                "-",
            ]);
        let mut child = spawn(cmd, "ffmpeg", &self.path)?;
        let (tail, stderr_thread) = drain_stderr(&mut child);
        let stdout = child.stdout.take();
        Ok(FfmpegFrames {
            video: self.clone(),
            child: Some(child),
            stdout,
            tail,
            stderr_thread,
            indices: indices.to_vec(),
            next: 0,
            last: None,
            failed: false,
            exit: None,
        })
    }
}

/// Reads `child`'s stdout into `out` and waits for it, killing it after `limit`; `Ok(None)`
/// when it was killed for taking too long.
fn read_with_deadline(
    child: &mut Child,
    out: &mut Vec<u8>,
    limit: Duration,
) -> std::io::Result<Option<ExitStatus>> {
    let Some(mut stdout) = child.stdout.take() else {
        return child.wait().map(Some);
    };
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        // ffprobe's JSON for one stream is a few KB; 1 MiB bounds a misbehaving program.
        let _ = (&mut stdout).take(1 << 20).read_to_end(&mut buf);
        buf
    });
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            *out = reader.join().unwrap_or_default();
            return Ok(Some(status));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The sampled frames of an [`FfmpegVideo`], read from a running `ffmpeg` one at a time.
/// Dropping it kills and reaps the process.
#[derive(Debug)]
pub struct FfmpegFrames {
    video: FfmpegVideo,
    child: Option<Child>,
    stdout: Option<ChildStdout>,
    tail: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
    indices: Vec<usize>,
    /// The position in `indices` of the next frame to yield.
    next: usize,
    /// The last frame read, for a repeated index.
    last: Option<(usize, LoadedImage)>,
    failed: bool,
    /// How ffmpeg ended, once reaped.
    exit: Option<ExitStatus>,
}

impl FfmpegFrames {
    /// The `ffmpeg` process's id while it runs (for tests that check it is gone).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn frame_bytes(&self) -> usize {
        self.video.width as usize * self.video.height as usize * 3
    }

    /// Reads the next frame from the pipe; `Ok(None)` at the end of the stream.
    fn read_frame(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; self.frame_bytes()];
        let Some(out) = &mut self.stdout else {
            return Ok(None);
        };
        let mut filled = 0;
        while filled < buf.len() {
            match out.read(&mut buf[filled..]) {
                Ok(0) => return Ok(None),
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Some(buf))
    }

    /// The error for a stream that ended (or broke) before frame `index`: how ffmpeg ended,
    /// else how many frames it gave.
    fn ended_early(&mut self, index: usize) -> VideoError {
        let status = self.reap();
        if let Some(h) = self.stderr_thread.take() {
            let _ = h.join();
        }
        let path = self.video.path.clone();
        let counted = if self.video.exact_count {
            "its header announces"
        } else {
            "its duration suggests"
        };
        match status {
            Some(s) if !s.success() => VideoError::Ffmpeg {
                path,
                reason: format!(
                    "ffmpeg {} before frame {index}: {}",
                    status_text(s),
                    tail_text(&self.tail)
                ),
            },
            _ => VideoError::Ffmpeg {
                path,
                reason: format!(
                    "the stream ended before frame {index}, though {counted} {} frames",
                    self.video.info.n_frames
                ),
            },
        }
    }

    /// After the end of the stream: waits for ffmpeg (once) and returns how it ended.
    fn reap(&mut self) -> Option<ExitStatus> {
        self.stdout = None;
        if let Some(mut child) = self.child.take() {
            self.exit = child.wait().ok();
        }
        self.exit
    }

    /// After the end of the stream: whether ffmpeg exited with success.
    fn ended_cleanly(&mut self) -> bool {
        self.reap().is_some_and(|s| s.success())
    }

    fn finish(&mut self) {
        self.stdout = None;
        if let Some(mut child) = self.child.take() {
            // Everything wanted was read; ffmpeg may still be decoding the rest of the file.
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(h) = self.stderr_thread.take() {
            let _ = h.join();
        }
    }
}

impl Iterator for FfmpegFrames {
    type Item = Result<LoadedImage, VideoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next >= self.indices.len() {
            self.finish();
            return None;
        }
        let index = self.indices[self.next];
        self.next += 1;
        if let Some((i, img)) = &self.last {
            if *i == index {
                return Some(Ok(img.clone()));
            }
        }
        let read = self.read_frame();
        let rgb = match read {
            Ok(Some(rgb)) => rgb,
            Ok(None) if !self.video.exact_count && self.last.is_some() && self.ended_cleanly() => {
                // The count was estimated from the duration (no frame count in the container,
                // as in WebM/MKV), which can run past the last frame (an audio track lasting
                // longer): the last frame stands in for the frames past the real end.
                let (_, img) = self.last.clone()?;
                return Some(Ok(img));
            }
            Ok(None) => {
                self.failed = true;
                return Some(Err(self.ended_early(index)));
            }
            Err(e) => {
                self.failed = true;
                return Some(Err(VideoError::Ffmpeg {
                    path: self.video.path.clone(),
                    reason: format!("reading frame {index} from ffmpeg failed: {e}"),
                }));
            }
        };
        let img = LoadedImage {
            path: PathBuf::from(format!("{}#frame{index}", self.video.path.display())),
            width: self.video.width,
            height: self.video.height,
            rgb,
        };
        // Kept for a repeated index, or to stand in for a last frame past an estimated end.
        self.last = Some((index, img.clone()));
        Some(Ok(img))
    }
}

impl Drop for FfmpegFrames {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Writes a video of `frames` (RGB8, all `width` x `height`) at `fps` to `path` with ffmpeg
/// (H.264 in MP4, yuv420p, as phones record), for tests and benchmarks. The file is written
/// to a temporary name and renamed.
pub fn write_mp4(
    path: &Path,
    width: u32,
    height: u32,
    fps: u32,
    frames: &mut dyn Iterator<Item = Vec<u8>>,
) -> Result<(), VideoError> {
    let io = |source| VideoError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("partial.mp4");
    let mut cmd = Command::new(program("ffmpeg"));
    cmd.args(["-nostdin", "-hide_banner", "-v", "error", "-y"])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s"])
        .arg(format!("{width}x{height}"))
        .args(["-r", &fps.to_string(), "-i", "-"])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .args(["-movflags", "+faststart"])
        .arg(&tmp);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            VideoError::NoFfmpeg {
                program: "ffmpeg",
                path: path.to_path_buf(),
            }
        } else {
            io(source)
        }
    })?;
    let (tail, errs) = drain_stderr(&mut child);
    let mut written = Ok(());
    if let Some(mut stdin) = child.stdin.take() {
        for frame in frames {
            if let Err(e) = stdin.write_all(&frame) {
                written = Err(e);
                break;
            }
        }
    }
    let status = child.wait().map_err(io)?;
    if let Some(h) = errs {
        let _ = h.join();
    }
    if !status.success() || written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return Err(VideoError::Ffmpeg {
            path: path.to_path_buf(),
            reason: format!(
                "ffmpeg {} while encoding: {}",
                status_text(status),
                tail_text(&tail)
            ),
        });
    }
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2 s, 10 fps, 64x48 MP4 whose frame i is filled with grey level 10 * i, written with
    /// ffmpeg (which the CI installs; these tests fail without it).
    fn clip(dir: &Path) -> PathBuf {
        let path = dir.join("clip.mp4");
        let mut frames = (0..20u8).map(|i| vec![i * 10; 64 * 48 * 3]);
        write_mp4(&path, 64, 48, 10, &mut frames).expect("ffmpeg must be installed");
        path
    }

    /// Whether a process runs (or is a zombie) under this pid.
    fn exists(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn ffmpeg_gives_the_sampled_frames_in_order_and_repeats_a_repeated_index() {
        let dir = tempfile::tempdir().unwrap();
        let v = FfmpegVideo::open(&clip(dir.path()), u64::MAX).unwrap();
        assert_eq!(v.info().n_frames, 20);
        assert_eq!(v.info().fps, 10.0);
        let frames: Vec<LoadedImage> = v
            .frames(&[0, 5, 5, 19])
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let grey: Vec<i32> = frames.iter().map(|f| i32::from(f.rgb[0])).collect();
        // H.264 in yuv420p is lossy: grey levels come back within a few steps.
        for (got, want) in grey.iter().zip([0, 50, 50, 190]) {
            assert!((got - want).abs() <= 4, "{grey:?}");
        }
        assert!(frames.iter().all(|f| (f.width, f.height) == (64, 48)));
    }

    #[test]
    fn a_reader_dropped_early_leaves_no_ffmpeg_process() {
        let dir = tempfile::tempdir().unwrap();
        let v = FfmpegVideo::open(&clip(dir.path()), u64::MAX).unwrap();
        let mut frames = v.frames(&[0, 10, 19]).unwrap();
        let pid = frames.pid().unwrap();
        assert!(frames.next().unwrap().is_ok());
        assert!(exists(pid));
        drop(frames);
        // Killed and reaped: not even a zombie remains.
        assert!(!exists(pid), "ffmpeg {pid} is still there");
        // Read to the end, the same.
        let mut frames = v.frames(&[0, 19]).unwrap();
        let pid = frames.pid().unwrap();
        assert_eq!(frames.by_ref().count(), 2);
        assert!(frames.next().is_none());
        assert!(!exists(pid));
    }

    fn probe(json: &str) -> Probe {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn rates_parse_as_ffprobe_writes_them() {
        assert_eq!(rate("30/1"), Some(30.0));
        assert!((rate("30000/1001").unwrap() - 29.97).abs() < 0.001);
        assert_eq!(rate("0/0"), None);
        assert_eq!(rate("25"), Some(25.0));
        assert_eq!(rate("x"), None);
    }

    #[test]
    fn a_phone_video_turned_90_degrees_is_read_upright() {
        let p = probe(
            r#"{"streams":[{"width":1920,"height":1080,"avg_frame_rate":"30/1","nb_frames":"90",
                "side_data_list":[{"rotation":-90}]}]}"#,
        );
        let v = FfmpegVideo::from_probe(Path::new("a.mov"), p, u64::MAX).unwrap();
        assert_eq!(v.dimensions(), (1080, 1920));
        assert_eq!(v.info().n_frames, 90);
        assert!(v.exact_count);
    }

    #[test]
    fn without_a_frame_count_it_is_estimated_from_the_duration() {
        let p = probe(
            r#"{"streams":[{"width":64,"height":48,"avg_frame_rate":"25/1"}],
                "format":{"duration":"2.03"}}"#,
        );
        let v = FfmpegVideo::from_probe(Path::new("a.webm"), p, u64::MAX).unwrap();
        assert_eq!(v.info().n_frames, 50);
        assert!(!v.exact_count);
    }

    #[test]
    fn headers_without_a_usable_stream_are_refused_with_the_reason() {
        let cases = [
            (r#"{"streams":[]}"#, "has no frames"),
            (
                r#"{"streams":[{"width":0,"height":48,"avg_frame_rate":"25/1","nb_frames":"3"}]}"#,
                "0x48",
            ),
            (
                r#"{"streams":[{"width":64,"height":48,"avg_frame_rate":"0/0","nb_frames":"3"}]}"#,
                "no frame rate",
            ),
            (
                r#"{"streams":[{"width":64,"height":48,"avg_frame_rate":"25/1"}]}"#,
                "neither its frame count nor its duration",
            ),
            (
                r#"{"streams":[{"width":64,"height":48,"avg_frame_rate":"25/1","nb_frames":"0"}]}"#,
                "has no frames",
            ),
            (
                r#"{"streams":[{"width":64,"height":48,"avg_frame_rate":"25/1","nb_frames":"9000000"}]}"#,
                "more than",
            ),
        ];
        for (json, want) in cases {
            let err = FfmpegVideo::from_probe(Path::new("v.mp4"), probe(json), u64::MAX)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want) && err.contains("v.mp4"), "{json}: {err}");
        }
    }
}
