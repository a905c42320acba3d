//! The SSE parser the relay reads upstream streams with (`sse::SseParser`).
//!
//! Invariants, beyond "no panic":
//! - the items do not depend on how the stream is cut into chunks: the same bytes pushed
//!   whole and pushed in fuzzer-chosen pieces give the same items, and a stream refused in
//!   one reading (an event over the size bound, a line that is not UTF-8) is refused in the
//!   other;
//! - what the relay writes back out (`encode_event`, `encode_comment`) parses to the same
//!   event or comment.
#![no_main]
use eks_mcp_gateway::sse::{SseError, SseItem, SseParser, encode_comment, encode_event};
use eks_mcp_gateway_fuzz::Choices;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut c = Choices::new(data);
    let max = 1 + (c.byte() as usize) * 16 + c.below(16);
    let mut step = c.byte() as usize | 1;
    let stream = c.rest();

    let whole = {
        let mut p = SseParser::new(max);
        p.push(stream)
    };

    let mut chunked: Result<Vec<SseItem>, SseError> = Ok(Vec::new());
    let mut p = SseParser::new(max);
    let mut at = 0;
    while at < stream.len() {
        // Piece sizes 0..=16 from a small LCG seeded by the input.
        step = step.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let len = (step >> 8) % 17;
        let end = (at + len).min(stream.len());
        match p.push(&stream[at..end]) {
            Ok(items) => chunked.as_mut().unwrap().extend(items),
            Err(e) => {
                chunked = Err(e);
                break;
            }
        }
        at = end;
    }
    match (&whole, &chunked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "chunking changed the items"),
        (Err(_), Err(_)) => {}
        _ => panic!("chunking changed the outcome: whole {whole:?}, in pieces {chunked:?}"),
    }

    for item in whole.into_iter().flatten() {
        let (bytes, expected) = match &item {
            SseItem::Event(ev) => (encode_event(ev), item.clone()),
            SseItem::Comment(text) => (encode_comment(text), item.clone()),
        };
        let mut p = SseParser::new(usize::MAX / 2);
        let back = p.push(&bytes).expect("an encoded item parses");
        assert_eq!(back, vec![expected], "encoding changed the item");
    }
});
