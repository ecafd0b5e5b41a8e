mod feed;
mod store;
mod traffic;
mod window;
fn main() {}
