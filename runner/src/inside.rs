//! Code that runs in the container's init, between libcontainer's start
//! and the command: the request's root file system.

pub(crate) mod dev;
pub(crate) mod hidden;
pub(crate) mod layers;
pub(crate) mod mounts;
pub(crate) mod network;
pub(crate) mod rootfs;
