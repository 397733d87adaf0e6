//! What a channel name and an event name may contain.
//!
//! Channel names: 1 to 128 bytes of ASCII letters, digits and `_ - . : @ ~ /`, where `/` splits
//! segments that must be non-empty and not `.` or `..` (so `chat/room1`, `user:42`, `job-7.log`).
//! Event names: 1 to 64 bytes of printable text without control characters, not `gap` (the hub's
//! own event for a cursor it cannot honour).

/// Longest channel name in bytes.
pub const MAX_CHANNEL_LEN: usize = 128;
/// Longest event name in bytes.
pub const MAX_EVENT_NAME_LEN: usize = 64;
/// Event name the hub reserves for telling a client it missed events.
pub const GAP_EVENT: &str = "gap";

/// A name that breaks the rules above, with the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("channel name is empty")]
    EmptyChannel,
    #[error("channel name is longer than {MAX_CHANNEL_LEN} bytes")]
    LongChannel,
    #[error("channel name {0:?} has a character outside A-Z a-z 0-9 _ - . : @ ~ /")]
    ChannelCharacter(String),
    #[error("channel name {0:?} has an empty, `.` or `..` segment")]
    ChannelSegment(String),
    #[error("channel {0:?} is listed twice")]
    DuplicateChannel(String),
    #[error("event name is empty")]
    EmptyEvent,
    #[error("event name is longer than {MAX_EVENT_NAME_LEN} bytes")]
    LongEvent,
    #[error("event name has a control character (CR, LF, NUL ...)")]
    EventCharacter,
    #[error("event name {GAP_EVENT:?} is reserved for the hub")]
    ReservedEvent,
}

pub fn check_channel(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::EmptyChannel);
    }
    if name.len() > MAX_CHANNEL_LEN {
        return Err(NameError::LongChannel);
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"_-.:@~/".contains(&b);
    if !name.bytes().all(allowed) {
        return Err(NameError::ChannelCharacter(name.escape_debug().to_string()));
    }
    if name
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(NameError::ChannelSegment(name.to_owned()));
    }
    Ok(())
}

/// Checks each name, and that none is listed twice.
pub fn check_channels(names: &[String]) -> Result<(), NameError> {
    if let [name] = names {
        // The usual case: nothing to compare with, so no set to build.
        return check_channel(name);
    }
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    for name in names {
        check_channel(name)?;
        if !seen.insert(name.as_str()) {
            return Err(NameError::DuplicateChannel(name.clone()));
        }
    }
    Ok(())
}

pub fn check_event_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::EmptyEvent);
    }
    if name.len() > MAX_EVENT_NAME_LEN {
        return Err(NameError::LongEvent);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::EventCharacter);
    }
    if name == GAP_EVENT {
        return Err(NameError::ReservedEvent);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        for good in [
            "news",
            "chat/room-1",
            "user:42",
            "a.b_c@d~e",
            &"x".repeat(128),
        ] {
            assert_eq!(check_channel(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "a b",
            "a/../b",
            "..",
            "/a",
            "a/",
            "a//b",
            "a\0b",
            "é",
            "a?b",
            "a%2Fb",
            &"x".repeat(129),
        ] {
            assert!(check_channel(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn channel_lists() {
        let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(check_channels(&names(&["news"])), Ok(()));
        assert_eq!(check_channels(&names(&["news", "chat/1"])), Ok(()));
        assert_eq!(
            check_channels(&names(&["a/../b"])),
            Err(NameError::ChannelSegment("a/../b".into()))
        );
        assert_eq!(
            check_channels(&names(&["news", "chat", "news"])),
            Err(NameError::DuplicateChannel("news".into()))
        );
        assert_eq!(
            check_channels(&names(&["news", "a b"])),
            Err(NameError::ChannelCharacter("a b".into()))
        );
    }

    #[test]
    fn event_names() {
        assert_eq!(check_event_name("update"), Ok(()));
        assert_eq!(check_event_name("progress été"), Ok(()));
        for bad in ["", "a\nb", "a\rb", "a\0", "gap", &"e".repeat(65)] {
            assert!(check_event_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
