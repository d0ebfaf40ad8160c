//! Prometheus metrics (`GET /metrics`, text exposition format 0.0.4): counters of requests,
//! tokens, cache use and refusals, the queue as gauges, and histograms of the times a client
//! feels (queue wait, time to first token, image encode, whole request).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// A histogram with fixed bucket bounds, in seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations at most each bound (not cumulative; summed when written).
    counts: Vec<AtomicU64>,
    /// Sum of observations, in microseconds.
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// Bucket bounds for latencies, in seconds.
const LATENCY: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, secs: f64) {
        let secs = secs.max(0.0);
        if let Some(i) = self.bounds.iter().position(|&b| secs <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Everything `/metrics` reports. Shared by the HTTP handlers and the engine thread.
#[derive(Debug)]
pub struct Metrics {
    /// Finished HTTP requests by route and status.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Prompt positions of answered requests (text tokens and image embeddings).
    pub prompt_tokens: AtomicU64,
    /// Prompt positions found in the KV cache (not prefilled again).
    pub reused_prompt_tokens: AtomicU64,
    /// Generated tokens.
    pub generated_tokens: AtomicU64,
    /// Images found in the embedding cache.
    pub cache_hits: AtomicU64,
    /// Images that had to be encoded.
    pub cache_misses: AtomicU64,
    /// Projector calls (one per overview or slice).
    pub projector_calls: AtomicU64,
    /// Answers stopped because their client went away.
    pub cancelled: AtomicU64,
    /// Requests refused with 429 because the queue was full.
    pub rejected_queue_full: AtomicU64,
    /// Requests waiting for the engine.
    pub queue_depth: AtomicI64,
    /// Requests the engine is answering (0 or 1).
    pub running: AtomicI64,
    /// Seconds from arrival to the engine starting on a request.
    pub queue_seconds: Histogram,
    /// Seconds from arrival to the first generated token.
    pub time_to_first_token_seconds: Histogram,
    /// Seconds of projector work per request that encoded images.
    pub encode_seconds: Histogram,
    /// Seconds from arrival to the last token.
    pub request_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            prompt_tokens: AtomicU64::new(0),
            reused_prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            projector_calls: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            rejected_queue_full: AtomicU64::new(0),
            queue_depth: AtomicI64::new(0),
            running: AtomicI64::new(0),
            queue_seconds: Histogram::new(LATENCY),
            time_to_first_token_seconds: Histogram::new(LATENCY),
            encode_seconds: Histogram::new(LATENCY),
            request_seconds: Histogram::new(LATENCY),
        }
    }
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

impl Metrics {
    /// Counts a finished HTTP request.
    pub fn count_request(&self, route: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((route.to_string(), status)).or_insert(0) += 1;
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP minicpmv_requests_total HTTP requests answered, by route and status.\n# TYPE minicpmv_requests_total counter"
        );
        let map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        for ((route, status), n) in map.iter() {
            let _ = writeln!(
                out,
                "minicpmv_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        drop(map);
        let counters: [(&str, &str, &AtomicU64); 9] = [
            (
                "minicpmv_prompt_tokens_total",
                "Prompt positions of answered requests (text tokens and image embeddings).",
                &self.prompt_tokens,
            ),
            (
                "minicpmv_prompt_tokens_reused_total",
                "Prompt positions found in the KV cache and not computed again.",
                &self.reused_prompt_tokens,
            ),
            (
                "minicpmv_generated_tokens_total",
                "Tokens generated.",
                &self.generated_tokens,
            ),
            (
                "minicpmv_image_cache_hits_total",
                "Images whose embeddings came from the embedding cache.",
                &self.cache_hits,
            ),
            (
                "minicpmv_image_cache_misses_total",
                "Images that had to be encoded by the projector.",
                &self.cache_misses,
            ),
            (
                "minicpmv_projector_calls_total",
                "Projector calls (one per overview or slice).",
                &self.projector_calls,
            ),
            (
                "minicpmv_requests_cancelled_total",
                "Answers stopped because the client disconnected.",
                &self.cancelled,
            ),
            (
                "minicpmv_requests_rejected_total",
                "Requests refused with 429 because the queue was full.",
                &self.rejected_queue_full,
            ),
            (
                "minicpmv_images_total",
                "Images of answered requests (hits and misses).",
                &AtomicU64::new(
                    self.cache_hits.load(Ordering::Relaxed)
                        + self.cache_misses.load(Ordering::Relaxed),
                ),
            ),
        ];
        for (name, help, v) in counters {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        for (name, help, v) in [
            (
                "minicpmv_queue_depth",
                "Requests waiting for the engine.",
                &self.queue_depth,
            ),
            (
                "minicpmv_requests_running",
                "Requests the engine is answering.",
                &self.running,
            ),
        ] {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        self.queue_seconds.write(
            &mut out,
            "minicpmv_queue_seconds",
            "Seconds from arrival until the engine starts on a request.",
        );
        self.time_to_first_token_seconds.write(
            &mut out,
            "minicpmv_time_to_first_token_seconds",
            "Seconds from arrival to the first generated token.",
        );
        self.encode_seconds.write(
            &mut out,
            "minicpmv_image_encode_seconds",
            "Projector seconds of a request that encoded images.",
        );
        self.request_seconds.write(
            &mut out,
            "minicpmv_request_seconds",
            "Seconds from arrival to the end of the answer.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(7.0);
        let mut out = String::new();
        h.write(&mut out, "t", "help");
        assert!(out.contains("t_bucket{le=\"0.1\"} 1\n"), "{out}");
        assert!(out.contains("t_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("t_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("t_sum 7.55\nt_count 3\n"), "{out}");
    }

    #[test]
    fn requests_are_counted_by_route_and_status() {
        let m = Metrics::default();
        m.count_request("/v1/chat/completions", 200);
        m.count_request("/v1/chat/completions", 200);
        m.count_request("/api/chat", 429);
        let text = m.render();
        assert!(text.contains(
            "minicpmv_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 2\n"
        ));
        assert!(text.contains("minicpmv_requests_total{route=\"/api/chat\",status=\"429\"} 1\n"));
        assert!(text.contains("# TYPE minicpmv_queue_depth gauge\nminicpmv_queue_depth 0\n"));
    }
}
