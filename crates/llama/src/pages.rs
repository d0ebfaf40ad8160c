//! Resident pages of memory-mapped files: find where a file is mapped in this process, and
//! drop those pages from the process (they stay in the OS page cache).

use std::path::Path;

/// Address ranges `[start, end)` where `file` is mapped in this process, read from
/// `/proc/self/maps` (matched by inode and device, so any spelling of the path works). Empty
/// when the file is not mapped or on systems without `/proc`.
pub(super) fn file_mappings(file: &Path) -> Vec<(usize, usize)> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(file) else {
            return Vec::new();
        };
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return Vec::new();
        };
        parse_maps(&maps, meta.ino(), meta.dev())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        Vec::new()
    }
}

/// The ranges of `/proc/self/maps` lines whose inode is `ino` on device `dev`.
/// A line: `7f..-7f.. r--s 00000000 fd:01 1234  /path` (device as hex major:minor).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_maps(maps: &str, ino: u64, dev: u64) -> Vec<(usize, usize)> {
    let (major, minor) = dev_major_minor(dev);
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let range = f.next()?;
            let _perms = f.next()?;
            let _offset = f.next()?;
            let device = f.next()?;
            let inode: u64 = f.next()?.parse().ok()?;
            let (ma, mi) = device.split_once(':')?;
            let (ma, mi) = (
                u64::from_str_radix(ma, 16).ok()?,
                u64::from_str_radix(mi, 16).ok()?,
            );
            if inode != ino || ma != major || mi != minor {
                return None;
            }
            let (s, e) = range.split_once('-')?;
            Some((
                usize::from_str_radix(s, 16).ok()?,
                usize::from_str_radix(e, 16).ok()?,
            ))
        })
        .collect()
}

/// Linux's encoding of a device number (glibc's `gnu_dev_major`/`gnu_dev_minor`).
fn dev_major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff);
    (major, minor)
}

/// Drops this process's resident pages of `[start, end)`, a range of a read-only shared file
/// mapping found by [`file_mappings`]. The next access reads the same bytes again from the page
/// cache (or the file).
pub(super) fn release(start: usize, end: usize) {
    #[cfg(unix)]
    if end > start {
        // SAFETY: [start, end) is a whole mapping taken from /proc/self/maps for the model
        // file, which llama.cpp maps read-only and shared (MAP_SHARED, PROT_READ) and keeps
        // mapped for the model's lifetime. MADV_DONTNEED on such a mapping only drops the page
        // table entries: the memory stays valid and reads return the file's bytes again, so
        // no pointer into it is invalidated. A failure (EINVAL on an odd mapping) is harmless
        // and ignored: the pages simply stay resident.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// Returns the allocator's free heap memory to the OS (glibc's `malloc_trim`): after a big
/// phase ends (the projector and the preprocessed slices freed), the next phase starts from
/// a small heap instead of one held at the previous high-water mark.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists; it has no preconditions and no
    // pointer the program holds is affected.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_match_by_inode_and_device() {
        // Device 0xfd01 = major 0xfd (253), minor 1; inode 1234.
        let dev = (0xfd << 8) | 1;
        let maps = "\
7f0000000000-7f0000100000 r--s 00000000 fd:01 1234                       /m/model.gguf
7f0000200000-7f0000300000 r--s 00000000 fd:01 9999                       /m/other.gguf
7f0000400000-7f0000500000 r--s 00100000 fd:02 1234                       /x/model.gguf
7f0000600000-7f0000700000 rw-p 00000000 00:00 0 
";
        assert_eq!(
            parse_maps(maps, 1234, dev),
            vec![(0x7f00_0000_0000, 0x7f00_0010_0000)]
        );
        assert!(parse_maps(maps, 4321, dev).is_empty());
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn finds_a_file_this_process_maps() {
        // The test binary itself is mapped executable; its ranges are found by inode.
        let exe = std::env::current_exe().unwrap();
        assert!(!file_mappings(&exe).is_empty(), "{}", exe.display());
        assert!(file_mappings(Path::new("/nonexistent/file")).is_empty());
    }
}
