//! Encode/decode throughput of the frames Shardline sends most.
//!
//! Three shapes: one 64-byte row write, a 100-row batch write, and a 1000-row read response.
//! Each is measured as frame encode (message → wire bytes) and frame decode (wire bytes →
//! typed message, CRC checked), reported per frame and per byte.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardline_protocol::{frame, Message, Request, Response, Row, Value, WriteBatch, DEFAULT_MAX_PAYLOAD};

/// A row whose encoded body is about 64 bytes: key, a 48-char name, marks.
fn row(key: i64) -> Row {
    Row::new(key, vec![Value::Str(format!("{:048}", key)), Value::Int(key % 100)])
}

fn rows(n: i64) -> Vec<Row> {
    (0..n).map(row).collect()
}

fn bench_request(c: &mut Criterion, name: &str, request: Request) {
    let frame = request.to_frame(1).unwrap();
    let mut wire = BytesMut::new();
    frame::encode(&frame, &mut wire);
    let wire = wire.freeze();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function(BenchmarkId::new("encode", wire.len()), |b| {
        let mut out = BytesMut::with_capacity(wire.len());
        b.iter(|| {
            out.clear();
            frame::encode(&black_box(&request).to_frame(1).unwrap(), &mut out);
        })
    });
    group.bench_function(BenchmarkId::new("decode", wire.len()), |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            let f = frame::decode(&mut buf, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
            black_box(Request::from_frame(&f).unwrap());
        })
    });
    group.finish();
}

fn write_single(c: &mut Criterion) {
    let batch = WriteBatch::encode(1, 1, &rows(1)).unwrap();
    bench_request(c, "write_1_row_64B", Request::Write(batch));
}

fn write_batch(c: &mut Criterion) {
    let batch = WriteBatch::encode(1, 1, &rows(100)).unwrap();
    bench_request(c, "write_100_rows", Request::Write(batch));
}

/// The balancer's split: index walk and per-shard select, no row decoding.
fn write_batch_split(c: &mut Criterion) {
    let batch = WriteBatch::encode(1, 1, &(0..100).map(|k| row(k * 160)).collect::<Vec<_>>()).unwrap();
    c.bench_function("write_100_rows/split_4_shards", |b| {
        b.iter(|| {
            let runs = batch.runs(|k| Some(k / 4096)).unwrap();
            for (_, r) in &runs {
                black_box(batch.select(std::slice::from_ref(r)));
            }
        })
    });
}

fn read_response(c: &mut Criterion) {
    let response = Response::Rows { at: Vec::new(), rows: rows(1000) };
    let frame = response.to_frame(1).unwrap();
    let mut wire = BytesMut::new();
    frame::encode(&frame, &mut wire);
    let wire = wire.freeze();
    let mut group = c.benchmark_group("read_response_1000_rows");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function(BenchmarkId::new("encode", wire.len()), |b| {
        let mut out = BytesMut::with_capacity(wire.len());
        b.iter(|| {
            out.clear();
            frame::encode(&black_box(&response).to_frame(1).unwrap(), &mut out);
        })
    });
    group.bench_function(BenchmarkId::new("decode", wire.len()), |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            let f = frame::decode(&mut buf, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
            black_box(Response::from_frame(&f).unwrap());
        })
    });
    group.finish();
}

criterion_group!(benches, write_single, write_batch, write_batch_split, read_response);
criterion_main!(benches);
