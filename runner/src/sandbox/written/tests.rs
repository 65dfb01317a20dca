use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use super::*;

/// Twins as made before a run: directories only.
const TWINS: [&str; 8] = [
    "etc",
    "usr",
    "usr/lib",
    "usr/share",
    "usr/share/doc",
    "var",
    "var/tmp",
    "srv",
];

/// An upper directory of twins, settled, and a watch of each.
fn watched_upper(upper: &Path) -> (OwnedFd, UpperWatch, SystemTime) {
    for dir in TWINS {
        std::fs::create_dir_all(upper.join(dir)).unwrap();
    }
    std::thread::sleep(3 * coarse_clock::tick());
    let settled = coarse_clock::settled_before(SystemTime::now());
    let fd = inotify::instance().unwrap();
    let dirs: Vec<(i32, PathBuf)> = std::iter::once("")
        .chain(TWINS)
        .map(|rel| {
            let wd = inotify::add_watch(fd.as_fd(), &upper.join(rel), inotify::TWIN_EVENTS);
            (wd.unwrap(), PathBuf::from(rel))
        })
        .collect();
    let watch = UpperWatch::of(Descriptor::Fd(fd.as_raw_fd()), &dirs).unwrap();
    (fd, watch, settled)
}

#[test]
fn an_unchanged_empty_directory_is_skipped_and_every_write_still_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path();
    for dir in TWINS {
        std::fs::create_dir_all(upper.join(dir)).unwrap();
    }
    std::thread::sleep(3 * coarse_clock::tick());
    let cut = coarse_clock::settled_before(SystemTime::now());
    let settled = Some(cut);
    assert_eq!(tree_bytes(upper, settled), 0);
    // The run: a file in a leaf, a new directory with a file in another
    // leaf, a file in a directory with subdirectories, a file renamed into
    // a leaf.
    std::fs::write(upper.join("etc/a"), "12345").unwrap();
    std::fs::create_dir(upper.join("usr/lib/new")).unwrap();
    std::fs::write(upper.join("usr/lib/new/b"), "123").unwrap();
    std::fs::write(upper.join("usr/c"), "12").unwrap();
    std::fs::write(upper.join("d"), "1").unwrap();
    std::fs::rename(upper.join("d"), upper.join("var/tmp/d")).unwrap();
    assert_eq!(tree_bytes(upper, None), 11);
    assert_eq!(tree_bytes(upper, settled), 11);
    // Only untouched leaves were skipped: usr/share/doc here.
    let ctime = |p: &str| {
        let m = std::fs::metadata(upper.join(p)).unwrap();
        (m.ctime(), m.ctime_nsec())
    };
    assert!(coarse_clock::stamped_before(ctime("usr/share/doc"), cut));
    assert!(!coarse_clock::stamped_before(ctime("var/tmp"), cut));
}

/// Each way a run can put bytes in its upper directory, one after the
/// other, the watched measurement checked against a walk of everything
/// after each.
#[test]
fn the_watched_measurement_counts_what_a_walk_of_everything_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    let (_fd, watch, settled) = watched_upper(&upper);
    let mut written = Written::new(&upper, Some(settled), Some(&watch));
    assert!(written.events.is_some());
    assert_eq!(written.bytes(), 0);
    let hole = tmp.path().join("elsewhere");
    std::fs::create_dir(&hole).unwrap();
    let steps: [(&str, &dyn Fn()); 8] = [
        ("a file in a leaf twin", &|| {
            std::fs::write(upper.join("usr/share/doc/a"), "12345").unwrap()
        }),
        ("a file in a twin with twins", &|| {
            std::fs::write(upper.join("usr/b"), "12").unwrap()
        }),
        ("a new directory deep with files", &|| {
            std::fs::create_dir_all(upper.join("var/tmp/x/y")).unwrap();
            std::fs::write(upper.join("var/tmp/x/y/c"), "123").unwrap();
        }),
        ("a file made elsewhere, moved in", &|| {
            std::fs::write(hole.join("d"), "1234").unwrap();
            std::fs::rename(hole.join("d"), upper.join("etc/d")).unwrap();
        }),
        ("a file linked in", &|| {
            std::fs::write(hole.join("e"), "1").unwrap();
            std::fs::hard_link(hole.join("e"), upper.join("srv/e")).unwrap();
        }),
        ("a file grown after it was seen", &|| {
            std::fs::write(upper.join("usr/share/doc/a"), "1234567890").unwrap()
        }),
        // Its twin usr/share/doc, its watch lost, goes with it: a file
        // written there since lands where no watch follows it.
        ("a twin moved into another, then written in", &|| {
            std::fs::rename(upper.join("usr/share"), upper.join("srv/share")).unwrap();
            std::fs::write(upper.join("srv/share/doc/f"), "123456").unwrap();
        }),
        ("a twin removed and made again with a file", &|| {
            std::fs::remove_dir(upper.join("usr/lib")).unwrap();
            std::fs::create_dir(upper.join("usr/lib")).unwrap();
            std::fs::write(upper.join("usr/lib/g"), "1234567").unwrap();
        }),
    ];
    for (what, step) in steps {
        step();
        let whole = tree_bytes(&upper, None);
        assert_eq!(written.bytes(), whole, "{what}");
        assert!(written.events.is_some(), "{what}: the events still tell");
    }
    assert_eq!(tree_bytes(&upper, None), 10 + 2 + 3 + 4 + 1 + 6 + 7);
}

/// Events the queue had no room for: the measurement walks everything,
/// then and after, and misses nothing the lost events would have named.
#[test]
fn an_overflowing_event_queue_falls_back_to_measuring_every_twin() {
    let queued = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events").unwrap();
    let queued: usize = queued.trim().parse().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    let (_fd, watch, settled) = watched_upper(&upper);
    let mut written = Written::new(&upper, Some(settled), Some(&watch));
    for i in 0..=queued {
        std::fs::File::create(upper.join(format!("etc/{i}"))).unwrap();
    }
    // After the overflow: its event is lost.
    std::fs::write(upper.join("usr/share/doc/big"), vec![0u8; 4096]).unwrap();
    assert_eq!(written.bytes(), 4096);
    assert!(written.events.is_none());
    std::fs::write(upper.join("var/tmp/more"), "12").unwrap();
    assert_eq!(written.bytes(), 4098);
}

/// A watch this measurement does not know of, or one not taken as this
/// process's descriptor: it trusts none of them.
#[test]
fn events_it_cannot_place_are_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    let (fd, watch, settled) = watched_upper(&upper);
    let sent = UpperWatch {
        inotify: Descriptor::Passed(0),
        ..watch.clone()
    };
    assert!(Written::new(&upper, Some(settled), Some(&sent))
        .events
        .is_none());
    assert!(Written::new(&upper, None, Some(&watch)).events.is_none());
    // srv, the last, left out.
    let mut dirs: Vec<(i32, PathBuf)> = watch
        .dirs()
        .unwrap()
        .into_iter()
        .map(|(wd, rel)| (wd, rel.to_path_buf()))
        .collect();
    assert_eq!(dirs.pop().unwrap().1, Path::new("srv"));
    let fewer = UpperWatch::of(watch.inotify, &dirs).unwrap();
    let mut written = Written::new(&upper, Some(settled), Some(&fewer));
    std::fs::write(upper.join("srv/f"), "123").unwrap();
    assert_eq!(written.bytes(), 3);
    assert!(written.events.is_none());
    drop(fd);
}

#[test]
fn a_watch_sends_its_paths_one_a_line_or_not_at_all() {
    let dirs = [(1, ""), (2, "etc"), (5, "usr/lib")].map(|(wd, r)| (wd, PathBuf::from(r)));
    let watch = UpperWatch::of(Descriptor::Passed(3), &dirs).unwrap();
    assert_eq!(
        (watch.wds.as_slice(), watch.dirs.as_str()),
        (&[1, 2, 5][..], "\netc\nusr/lib")
    );
    let back: Vec<(i32, PathBuf)> = watch
        .dirs()
        .unwrap()
        .into_iter()
        .map(|(wd, rel)| (wd, rel.to_path_buf()))
        .collect();
    assert_eq!(back, dirs);
    // A name no line can carry: no watch is sent.
    let newline = [(1, PathBuf::from("")), (2, PathBuf::from("a\nb"))];
    assert!(UpperWatch::of(Descriptor::Passed(0), &newline).is_none());
    use std::os::unix::ffi::OsStrExt;
    let bytes = std::ffi::OsStr::from_bytes(b"caf\xe9");
    let latin = [(1, PathBuf::from("")), (2, PathBuf::from(bytes))];
    assert!(UpperWatch::of(Descriptor::Passed(0), &latin).is_none());
    // Received out of order, or not one for one: not used.
    for (wds, lines) in [
        (vec![2, 1], "\na"),
        (vec![1, 2, 3], "\na"),
        (vec![1], "\na"),
    ] {
        let odd = UpperWatch {
            inotify: Descriptor::Fd(0),
            wds,
            dirs: lines.into(),
        };
        assert!(odd.dirs().is_none(), "{odd:?}");
    }
}
