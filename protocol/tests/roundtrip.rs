//! Property tests: every frame and every message encodes and decodes to itself, also when
//! the bytes arrive split at every possible offset.

mod strategies;

use bytes::BytesMut;
use proptest::prelude::*;
use shardline_protocol::*;
use strategies::*;

fn wire(frame: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    frame::encode(frame, &mut buf);
    buf
}

/// Feeds `bytes` in two pieces split at `at` and collects what decodes.
fn decode_split(bytes: &[u8], at: usize) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in [&bytes[..at], &bytes[at..]] {
        buf.extend_from_slice(piece);
        while let Some(f) = frame::decode(&mut buf, DEFAULT_MAX_PAYLOAD).expect("valid stream") {
            out.push(f);
        }
    }
    assert!(buf.is_empty());
    out
}

fn round_trip<M: Message + PartialEq + std::fmt::Debug>(message: &M, id: u64) {
    let frame = message.to_frame(id).unwrap();
    let bytes = wire(&frame);
    for at in 0..=bytes.len() {
        let frames = decode_split(&bytes, at);
        assert_eq!(frames.len(), 1, "split at {at}");
        assert_eq!(frames[0], frame);
        assert_eq!(&M::from_frame(&frames[0]).unwrap(), message, "split at {at}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frames_round_trip_at_every_split(frame in frame()) {
        let bytes = wire(&frame);
        for at in 0..=bytes.len() {
            prop_assert_eq!(decode_split(&bytes, at), vec![frame.clone()]);
        }
    }

    #[test]
    fn frame_sequences_round_trip_byte_by_byte(frames in proptest::collection::vec(frame(), 1..5)) {
        let mut bytes = BytesMut::new();
        for f in &frames {
            frame::encode(f, &mut bytes);
        }
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in bytes.iter() {
            buf.extend_from_slice(&[*b]);
            while let Some(f) = frame::decode(&mut buf, DEFAULT_MAX_PAYLOAD).unwrap() {
                out.push(f);
            }
        }
        prop_assert_eq!(out, frames);
    }

    #[test]
    fn requests_round_trip(request in request(), id in any::<u64>()) {
        round_trip(&request, id);
    }

    #[test]
    fn responses_round_trip(response in response(), id in any::<u64>()) {
        round_trip(&response, id);
    }

    #[test]
    fn control_requests_round_trip(request in control_request(), id in any::<u64>()) {
        round_trip(&request, id);
    }

    #[test]
    fn peer_requests_round_trip(request in peer_request(), id in any::<u64>()) {
        round_trip(&request, id);
    }

    #[test]
    fn log_entries_round_trip(entry in log_entry()) {
        let bytes = entry.encode().unwrap();
        prop_assert_eq!(LogEntry::decode(&bytes).unwrap(), entry);
    }

    #[test]
    fn write_batches_split_and_rejoin(rows in rows(), shards in 1i64..6) {
        let batch = WriteBatch::encode(3, 4, &rows).unwrap();
        let runs = batch.runs(|k| Some(k.rem_euclid(shards))).unwrap();
        let mut rejoined = Vec::new();
        for (_, range) in &runs {
            let part = WriteBatch::parse(batch.select(std::slice::from_ref(range)).to_bytes()).unwrap();
            prop_assert_eq!((part.client_id(), part.seq()), (3, 4));
            rejoined.extend(part.rows().unwrap());
        }
        prop_assert_eq!(rejoined, batch.rows().unwrap());
    }
}

#[test]
fn kind_constants_match_variants() {
    let cases = [
        (Request::Ping, kind::PING),
        (Request::Status, kind::STATUS),
        (Request::Stats, kind::STATS),
        (Request::RemoveServers { n: 1, servers: vec![] }, kind::REMOVE_SERVERS),
        (Request::Read { low: 0, high: 1, consistency: Consistency::Any }, kind::READ),
        (Request::ReadServer { server: "s".into() }, kind::READ_SERVER),
        (Request::Write(WriteBatch::encode(0, 0, &[]).unwrap()), kind::WRITE),
        (Request::Update { client_id: 0, seq: 0, row: Row::new(1, vec![]) }, kind::UPDATE),
        (Request::Delete { client_id: 0, seq: 0, key: 1 }, kind::DELETE),
        (Request::Log { shard: ShardId(1), count: 1 }, kind::LOG),
        (Request::GetTopology { known_version: 0 }, kind::GET_TOPOLOGY),
        (Request::SubscribeTopology, kind::SUBSCRIBE_TOPOLOGY),
        (Request::Failover { shard: ShardId(1), to: None }, kind::FAILOVER),
    ];
    for (request, want) in cases {
        assert_eq!(request.to_frame(0).unwrap().kind, want, "{request:?}");
    }
    // The Write constant must also be the variant's serde index, so the enum never drifts.
    let via_serde = postcard::to_allocvec(&Request::Write(WriteBatch::encode(0, 0, &[]).unwrap())).unwrap();
    assert_eq!(kind::REQUEST_BASE + via_serde[0], kind::WRITE);
    assert_eq!(Response::Error(ErrorCode::Internal("x".into())).to_frame(0).unwrap().kind, kind::ERROR);
}

#[test]
fn a_frame_of_one_enum_is_refused_by_another() {
    let frame = Request::Ping.to_frame(1).unwrap();
    assert!(matches!(Response::from_frame(&frame), Err(MessageError::WrongKind { .. })));
    assert!(matches!(ControlRequest::from_frame(&frame), Err(MessageError::WrongKind { .. })));
    let mut lying = frame.clone();
    lying.kind = kind::STATUS;
    assert!(matches!(Request::from_frame(&lying), Err(MessageError::KindMismatch { .. })));
}
