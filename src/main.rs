// Temporary: the binary is still a skeleton that wires none of its modules, so every item
// is "unused" outside the tests. Remove once main builds the app.
#![allow(dead_code)]

mod feed;
mod store;
mod traffic;
mod window;
fn main() {}
