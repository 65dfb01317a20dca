//! The cgroup managers' tests: the choice between them, against fake
//! cgroupfs directories, and the v2 manager on this host's real cgroup2
//! mount.

mod detection;
mod fake_fs;
mod real_v2;
mod restart;
