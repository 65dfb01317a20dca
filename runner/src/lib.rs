//! The sandbox: a rootless OCI container per action (libcontainer, seccompiler, Landlock).
