//! Objects, not just bytes: any serde value as a JSON payload (the
//! `serde` feature; `cargo test --all-features` runs this).
#![cfg(feature = "serde")]

mod support;

use serde::{Deserialize, Serialize};
use support::{WAIT, config, start};
use tickcast::client::{Client, ClientError, Event, decode_json};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Quote {
    symbol: String,
    bid: f64,
    ask: f64,
    tags: Vec<String>,
}

#[test]
fn values_travel_as_json_payloads() {
    let server = start(config());
    let sender = Client::connect(server.local_addr()).unwrap();
    let receiver = Client::connect(server.local_addr()).unwrap();
    let quote = Quote {
        symbol: "EURUSD".into(),
        bid: 1.0841,
        ask: 1.0843,
        tags: vec!["fx\nmajor".into()],
    };
    sender.send_json(&quote).unwrap();
    let payload = loop {
        match receiver.events().recv_timeout(WAIT).expect("no DATA") {
            Event::Data { payload, .. } => break payload,
            _ => continue,
        }
    };
    assert_eq!(decode_json::<Quote>(&payload).unwrap(), quote);

    // A payload that is not the expected shape is a clear error.
    let err = decode_json::<Quote>(b"{\"symbol\": 3}").unwrap_err();
    assert!(matches!(err, ClientError::Json(_)), "{err:?}");
    assert!(err.to_string().starts_with("JSON: "), "{err}");
}
