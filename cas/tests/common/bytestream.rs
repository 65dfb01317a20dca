//! ByteStream calls through the real tonic client, shared by the ByteStream
//! test files.

use corral_proto::bytestream::{QueryWriteStatusRequest, ReadRequest, WriteRequest, WriteResponse};

use super::TestServer;

/// The Write messages that send `data[start..]` in `chunk`-byte pieces,
/// with offsets counted from `start`, and a last empty message with
/// `finish_write` if `finish`. Only the first message names the resource.
pub fn chunks(
    name: &str,
    data: &[u8],
    start: usize,
    chunk: usize,
    finish: bool,
) -> Vec<WriteRequest> {
    let mut out = Vec::new();
    let mut offset = start;
    for (i, c) in data[start..].chunks(chunk).enumerate() {
        out.push(WriteRequest {
            resource_name: if i == 0 {
                name.to_string()
            } else {
                String::new()
            },
            write_offset: offset as i64,
            finish_write: false,
            data: c.to_vec().into(),
        });
        offset += c.len();
    }
    if finish {
        out.push(WriteRequest {
            resource_name: if out.is_empty() {
                name.to_string()
            } else {
                String::new()
            },
            write_offset: offset as i64,
            finish_write: true,
            data: Default::default(),
        });
    }
    out
}

/// One Write call sending `requests`, then closing the stream.
pub async fn write<S>(
    server: &TestServer<S>,
    requests: Vec<WriteRequest>,
) -> Result<WriteResponse, tonic::Status> {
    server
        .bytestream()
        .write(futures::stream::iter(requests))
        .await
        .map(|r| r.into_inner())
}

/// One Read call, collected.
pub async fn read<S>(
    server: &TestServer<S>,
    name: &str,
    offset: i64,
    limit: i64,
) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = server
        .bytestream()
        .read(ReadRequest {
            resource_name: name.into(),
            read_offset: offset,
            read_limit: limit,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        out.extend(m.data);
    }
    Ok(out)
}

/// QueryWriteStatus as `(committed_size, complete)`.
pub async fn query<S>(server: &TestServer<S>, name: &str) -> Result<(i64, bool), tonic::Status> {
    let r = server
        .bytestream()
        .query_write_status(QueryWriteStatusRequest {
            resource_name: name.into(),
        })
        .await?
        .into_inner();
    Ok((r.committed_size, r.complete))
}
