//! Any publish body (JSON, form or raw, chosen by the first byte) is either refused or turned
//! into publications that all obey the naming rules and the configured bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub::http::publish::{publications, BodyStyle};
use ssehub::names::{check_channel, check_event_name};
use ssehub::Config;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let config = Config {
        max_batch: 50,
        max_event_bytes: 4096,
        ..Config::default()
    };
    let (path, query, body);
    let style = match selector % 3 {
        0 => BodyStyle::Json,
        1 => BodyStyle::Form,
        _ => {
            // Raw: the first line is the path and query, the rest the body.
            let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let head = String::from_utf8_lossy(&rest[..split]).into_owned();
            (path, query) = match head.split_once('?') {
                Some((p, q)) => (p.to_owned(), q.to_owned()),
                None => (head, String::new()),
            };
            body = &rest[(split + 1).min(rest.len())..];
            return check(
                &config,
                BodyStyle::Raw {
                    channel_path: &path,
                    query: &query,
                },
                body,
            );
        }
    };
    check(&config, style, rest);
});

fn check(config: &Config, style: BodyStyle<'_>, body: &[u8]) {
    if let Ok((publications, single)) = publications(config, style, body) {
        assert!(!publications.is_empty() && publications.len() <= config.max_batch);
        assert!(!single || publications.len() == 1);
        for publication in publications {
            assert_eq!(check_channel(&publication.channel), Ok(()));
            if let Some(name) = &publication.fields.event {
                assert_eq!(check_event_name(name), Ok(()));
            }
            assert!(publication.fields.data.len() <= config.max_event_bytes);
        }
    }
}
