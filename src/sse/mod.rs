//! The wire format: how events are framed on an event stream, and how ids and cursors are written.

pub mod cursor;
pub mod encode;

pub use cursor::{Cursor, Epoch, Position};
pub use encode::{Event, EventFields};
