//! OCI image references, registry pulls, the layer cache and rootfs assembly.
