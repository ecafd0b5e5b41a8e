//! HAR 1.2 (<http://www.softwareishard.com/blog/har-12-spec/>), the document browsers'
//! network panels and other tools read and write: [`write`] makes one of a recording,
//! entry by entry; [`read`] turns one (ours, a browser's, mitmproxy's) back into
//! recorded transactions, entry by entry. Neither holds more than one entry at a time.

pub mod read;
pub mod write;

pub use read::{read, HarError, HarInfo};
pub use write::{entry, head, Entry, TAIL};
