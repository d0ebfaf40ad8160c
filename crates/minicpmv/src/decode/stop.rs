//! Stop strings (OpenAI's `stop`, Ollama's `options.stop`): the answer streams up to the first
//! occurrence of any of them, which is not part of the answer. Text is held back only while it
//! could still be the start of a stop string, so a client never sees a stop string's first
//! half. This is what llama.cpp's server does (`find_stopping_strings` with partial matches
//! held back, tools/server/server.cpp).

/// Scans streamed text for stop strings. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct StopScan {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopScan {
    /// A scan for `stops` (empty strings are ignored: they would stop before any text).
    pub fn new(stops: impl IntoIterator<Item = String>) -> StopScan {
        StopScan {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// Whether a stop string was found (the answer is complete; later text is dropped).
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Feeds the next piece of generated text; returns what can be shown now.
    pub fn push(&mut self, text: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.held.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            self.stopped = true;
            self.held.truncate(at);
            return std::mem::take(&mut self.held);
        }
        let keep = self.partial_suffix();
        let rest = self.held.split_off(self.held.len() - keep);
        std::mem::replace(&mut self.held, rest)
    }

    /// The text still held at the end of the answer (no stop string came).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length of the longest end of the held text that begins some stop string.
    fn partial_suffix(&self) -> usize {
        let len = self.held.len();
        let longest = self.stops.iter().map(|s| s.len() - 1).max().unwrap_or(0);
        (1..=longest.min(len))
            .rev()
            .filter(|&k| self.held.is_char_boundary(len - k))
            .find(|&k| {
                let tail = &self.held[len - k..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(stops: &[&str], pieces: &[&str]) -> (Vec<String>, String, bool) {
        let mut s = StopScan::new(stops.iter().map(|s| s.to_string()));
        let shown = pieces.iter().map(|p| s.push(p)).collect();
        let rest = s.finish();
        (shown, rest, s.stopped())
    }

    #[test]
    fn text_without_stop_strings_streams_unchanged() {
        let (shown, rest, stopped) = scan(&[], &["a", "bc"]);
        assert_eq!(shown, ["a", "bc"]);
        assert_eq!(rest, "");
        assert!(!stopped);
        // An empty stop string is ignored, not a stop before the first character.
        let (shown, _, stopped) = scan(&[""], &["a"]);
        assert_eq!(shown, ["a"]);
        assert!(!stopped);
    }

    #[test]
    fn the_answer_ends_before_the_stop_string() {
        let (shown, rest, stopped) = scan(&["END"], &["one ", "twoEND three"]);
        assert_eq!(shown, ["one ", "two"]);
        assert_eq!(rest, "");
        assert!(stopped);
    }

    #[test]
    fn a_stop_string_split_over_pieces_is_held_back_then_dropped() {
        let (shown, _, stopped) = scan(&["</s>"], &["hi <", "/", "s> more"]);
        assert_eq!(shown, ["hi ", "", ""]);
        assert!(stopped);
    }

    #[test]
    fn a_false_start_is_released_when_it_stops_matching() {
        let (shown, rest, stopped) = scan(&["STOP"], &["a ST", "AR", "t"]);
        assert_eq!(shown, ["a ", "STAR", "t"]);
        assert_eq!(rest, "");
        assert!(!stopped);
        // Held text that never completed is given back at the end.
        let (shown, rest, _) = scan(&["STOP"], &["x ST"]);
        assert_eq!(shown, ["x "]);
        assert_eq!(rest, "ST");
    }

    #[test]
    fn the_earliest_of_several_stop_strings_wins() {
        let (shown, _, _) = scan(&["bb", "a"], &["xbbya"]);
        assert_eq!(shown, ["x"]);
    }

    #[test]
    fn multibyte_text_is_split_only_at_character_boundaries() {
        // "é" is two bytes; the stop string shares its first byte with no held text.
        let (shown, _, stopped) = scan(&["éa"], &["xé", "b"]);
        assert_eq!(shown, ["x", "éb"]);
        assert!(!stopped);
    }
}
