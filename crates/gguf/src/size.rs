//! Byte counts as people read them, for every size the workspace prints (files, tensors, memory).

/// `512 B`, `1.50 KiB`, `14.18 GiB`: binary units, two decimals above bytes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn binary_units_two_decimals() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(5 << 30), "5.00 GiB");
        assert_eq!(human_bytes(15_229_741_728), "14.18 GiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.00 TiB");
    }
}
